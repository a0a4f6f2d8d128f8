/* The proxy event builder beyond the golden examples: repeated headers and
 * parameters, cookies, percent-encoding, omissions and nulls, binary bodies,
 * the headers API Gateway adds, and hostile bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "event.h"

#define H(n, v)                                                                                    \
    {                                                                                              \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                                         \
    }

static rw_event_route_t v2_route(void)
{
    rw_event_route_t r = {0};
    r.payload_version = RW_EVENT_V2;
    r.http_api = true;
    r.account_id = "123456789012";
    r.api_id = "api";
    r.stage = "$default";
    r.route_key = "GET /reels/{id}";
    r.domain_name = "api.example.com";
    return r;
}

static rw_event_route_t rest_route(void)
{
    rw_event_route_t r = {0};
    r.payload_version = RW_EVENT_V1;
    r.account_id = "123456789012";
    r.api_id = "api";
    r.stage = "prod";
    r.resource_path = "/reels/{id}";
    r.resource_id = "abc123";
    r.domain_name = "api.example.com";
    return r;
}

static rw_event_request_t request(const char *method, const char *target,
                                  const rw_event_kv_t *headers, size_t n_headers)
{
    rw_event_request_t rq = {0};
    const char *q = strchr(target, '?');
    rq.method = method;
    rq.raw_path = target;
    rq.raw_path_len = q ? (size_t)(q - target) : strlen(target);
    if (q) {
        rq.raw_query = q + 1;
        rq.raw_query_len = strlen(q + 1);
    }
    rq.headers = headers;
    rq.n_headers = n_headers;
    rq.source_ip = "198.51.100.7";
    rq.protocol = "HTTP/1.1";
    rq.request_id = "req-1";
    rq.time_ms = 1583348638390;
    return rq;
}

static cJSON *build(const rw_event_route_t *r, const rw_event_request_t *rq)
{
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(rw_event_build(r, rq, &json, &len), 0);
    assert_int_equal(strlen(json), len);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (root == NULL)
        fail_msg("not valid JSON: %s", json);
    free(json);
    return root;
}

/* Member at a '/'-separated path (no escaping needed in these tests). */
static const cJSON *at(const cJSON *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    const cJSON *cur = root;
    for (char *save = NULL, *tok = strtok_r(buf, "/", &save); tok;
         tok = strtok_r(NULL, "/", &save)) {
        if (cur == NULL)
            return NULL;
        cur = cJSON_IsArray(cur) ? cJSON_GetArrayItem(cur, atoi(tok))
                                 : cJSON_GetObjectItemCaseSensitive(cur, tok);
    }
    return cur;
}

static const char *str_at(const cJSON *root, const char *path)
{
    const cJSON *v = at(root, path);
    if (!cJSON_IsString(v))
        fail_msg("%s: expected a string, got %s", path, v ? cJSON_PrintUnformatted(v) : "nothing");
    return v->valuestring;
}

static void expect_absent(const cJSON *root, const char *path)
{
    const cJSON *v = at(root, path);
    if (v != NULL)
        fail_msg("%s: expected no such member, got %s", path, cJSON_PrintUnformatted(v));
}

static void expect_null(const cJSON *root, const char *path)
{
    const cJSON *v = at(root, path);
    if (!cJSON_IsNull(v))
        fail_msg("%s: expected null, got %s", path, v ? cJSON_PrintUnformatted(v) : "nothing");
}

static void expect_json(const cJSON *root, const char *path, const char *json)
{
    cJSON *want = cJSON_Parse(json);
    const cJSON *got = at(root, path);
    assert_non_null(want);
    if (got == NULL || !cJSON_Compare(want, got, true))
        fail_msg("%s: expected %s, got %s", path, json,
                 got ? cJSON_PrintUnformatted(got) : "nothing");
    cJSON_Delete(want);
}

static void v2_repeated_headers_are_comma_joined_lower_case(void **state)
{
    (void)state;
    rw_event_kv_t h[] = {H("X-Tag", "a"), H("Accept", "text/html"), H("x-tag", "b"),
                         H("X-TAG", "c, d"), H("X-Empty", "")};
    rw_event_route_t r = v2_route();
    rw_event_request_t rq = request("GET", "/reels/1", h, 5);
    cJSON *ev = build(&r, &rq);

    assert_string_equal(str_at(ev, "headers/x-tag"), "a,b,c, d");
    assert_string_equal(str_at(ev, "headers/accept"), "text/html");
    assert_string_equal(str_at(ev, "headers/x-empty"), "");
    expect_absent(ev, "headers/X-Tag");
    /* HTTP APIs tell the function the body length, 0 here. */
    assert_string_equal(str_at(ev, "headers/content-length"), "0");
    expect_absent(ev, "multiValueHeaders");
    cJSON_Delete(ev);
}

static void v1_headers_keep_last_value_and_all_values(void **state)
{
    (void)state;
    rw_event_kv_t h[] = {H("X-Tag", "a"), H("Accept", "text/html"), H("x-tag", "b"),
                         H("X-TAG", "c")};
    rw_event_route_t r = rest_route();
    rw_event_request_t rq = request("GET", "/reels/1", h, 4);
    cJSON *ev = build(&r, &rq);

    /* One header whatever the case, spelled as it first arrived. */
    assert_string_equal(str_at(ev, "headers/X-Tag"), "c");
    expect_absent(ev, "headers/x-tag");
    expect_json(ev, "multiValueHeaders/X-Tag", "[\"a\",\"b\",\"c\"]");
    expect_json(ev, "multiValueHeaders/Accept", "[\"text/html\"]");
    /* REST passes the client's headers through: no Content-Length made up. */
    expect_absent(ev, "headers/Content-Length");
    cJSON_Delete(ev);
}

static void query_parameters_repeated_and_decoded(void **state)
{
    (void)state;
    const char *target = "/reels/1?tag=a&tag=b%2Cc&q=caf%C3%A9+au+lait&empty=&flag&=x&&"
                         "bad=%zz%4&filter%5Bstatus%5D=open";
    rw_event_route_t r2 = v2_route(), r1 = rest_route();
    rw_event_request_t rq = request("GET", target, NULL, 0);
    cJSON *ev2 = build(&r2, &rq), *ev1 = build(&r1, &rq);

    /* Raw as received in rawQueryString, decoded in the parameters. */
    assert_string_equal(str_at(ev2, "rawQueryString"), strchr(target, '?') + 1);
    assert_string_equal(str_at(ev2, "queryStringParameters/tag"), "a,b,c");
    assert_string_equal(str_at(ev2, "queryStringParameters/q"), "café au lait");
    assert_string_equal(str_at(ev2, "queryStringParameters/empty"), "");
    assert_string_equal(str_at(ev2, "queryStringParameters/flag"), "");
    assert_string_equal(str_at(ev2, "queryStringParameters/bad"), "%zz%4");
    assert_string_equal(str_at(ev2, "queryStringParameters/filter[status]"), "open");
    assert_int_equal(cJSON_GetArraySize(at(ev2, "queryStringParameters")), 6);

    assert_string_equal(str_at(ev1, "queryStringParameters/tag"), "b,c");
    expect_json(ev1, "multiValueQueryStringParameters/tag", "[\"a\",\"b,c\"]");
    assert_string_equal(str_at(ev1, "queryStringParameters/q"), "café au lait");
    expect_json(ev1, "multiValueQueryStringParameters/flag", "[\"\"]");
    cJSON_Delete(ev2);
    cJSON_Delete(ev1);
}

static void path_raw_in_raw_path_decoded_in_http_path(void **state)
{
    (void)state;
    rw_event_kv_t pp[] = {H("id", "café/1")};
    rw_event_route_t r2 = v2_route(), r1 = rest_route();
    rw_event_request_t rq = request("GET", "/prod/reels/caf%C3%A9%2F1", NULL, 0);
    r2.path_params = r1.path_params = pp;
    r2.n_path_params = r1.n_path_params = 1;
    r1.stage_prefix_len = strlen("/prod");
    cJSON *ev2 = build(&r2, &rq), *ev1 = build(&r1, &rq);

    assert_string_equal(str_at(ev2, "rawPath"), "/prod/reels/caf%C3%A9%2F1");
    assert_string_equal(str_at(ev2, "requestContext/http/path"), "/prod/reels/café/1");
    assert_string_equal(str_at(ev2, "pathParameters/id"), "café/1");
    /* REST: path without the stage, still encoded; requestContext.path whole. */
    assert_string_equal(str_at(ev1, "path"), "/reels/caf%C3%A9%2F1");
    assert_string_equal(str_at(ev1, "requestContext/path"), "/prod/reels/caf%C3%A9%2F1");
    assert_string_equal(str_at(ev1, "resource"), "/reels/{id}");
    assert_string_equal(str_at(ev1, "requestContext/resourcePath"), "/reels/{id}");
    assert_string_equal(str_at(ev1, "pathParameters/id"), "café/1");
    cJSON_Delete(ev2);
    cJSON_Delete(ev1);
}

static void cookies_split_and_left_out_of_headers(void **state)
{
    (void)state;
    rw_event_kv_t h[] = {H("Cookie", "a=1; b=2"), H("X-A", "1"), H("cookie", " c=3 ;d=4; ;")};
    rw_event_route_t r = v2_route(), r1 = rest_route();
    rw_event_request_t rq = request("GET", "/", h, 3);
    cJSON *ev = build(&r, &rq), *ev1 = build(&r1, &rq);

    expect_json(ev, "cookies", "[\"a=1\",\"b=2\",\"c=3\",\"d=4\"]");
    expect_absent(ev, "headers/cookie");
    /* REST keeps Cookie as a header (no cookies field). */
    assert_string_equal(str_at(ev1, "headers/Cookie"), " c=3 ;d=4; ;");
    expect_json(ev1, "multiValueHeaders/Cookie", "[\"a=1; b=2\",\" c=3 ;d=4; ;\"]");
    expect_absent(ev1, "cookies");
    cJSON_Delete(ev);
    cJSON_Delete(ev1);
}

static void v2_omits_what_is_absent(void **state)
{
    (void)state;
    rw_event_kv_t h[] = {H("Host", "h.example.com")};
    rw_event_route_t r = v2_route();
    rw_event_request_t rq = request("GET", "/", h, 1);
    cJSON *ev = build(&r, &rq);

    assert_string_equal(str_at(ev, "version"), "2.0");
    assert_string_equal(str_at(ev, "rawQueryString"), "");
    expect_absent(ev, "cookies");
    expect_absent(ev, "queryStringParameters");
    expect_absent(ev, "pathParameters");
    expect_absent(ev, "stageVariables");
    expect_absent(ev, "body");
    expect_absent(ev, "requestContext/authorizer");
    assert_false(cJSON_IsTrue(at(ev, "isBase64Encoded")));
    assert_true(cJSON_IsBool(at(ev, "isBase64Encoded")));
    assert_string_equal(str_at(ev, "requestContext/http/userAgent"), "");
    assert_string_equal(str_at(ev, "requestContext/time"), "04/Mar/2020:19:03:58 +0000");
    assert_true(at(ev, "requestContext/timeEpoch")->valuedouble == 1583348638390.0);
    cJSON_Delete(ev);
}

static void v1_puts_null_where_api_gateway_does(void **state)
{
    (void)state;
    rw_event_route_t r = rest_route();
    rw_event_request_t rq = request("GET", "/", NULL, 0);
    r.resource_id = NULL;
    cJSON *ev = build(&r, &rq);

    expect_null(ev, "headers");
    expect_null(ev, "multiValueHeaders");
    expect_null(ev, "queryStringParameters");
    expect_null(ev, "multiValueQueryStringParameters");
    expect_null(ev, "pathParameters");
    expect_null(ev, "stageVariables");
    expect_null(ev, "body");
    expect_null(ev, "requestContext/resourceId");
    expect_null(ev, "requestContext/identity/userAgent");
    expect_null(ev, "requestContext/identity/caller");
    expect_absent(ev, "requestContext/identity/apiKey");
    expect_absent(ev, "requestContext/authorizer");
    expect_absent(ev, "version");
    assert_false(cJSON_IsTrue(at(ev, "isBase64Encoded")));
    cJSON_Delete(ev);
}

static void v1_identity_authorizer_and_stage_variables(void **state)
{
    (void)state;
    rw_event_identity_t id = {.api_key = "k3y", .api_key_id = "kid", .caller = "me"};
    rw_event_kv_t sv[] = {H("table", "reels")};
    cJSON *auth = cJSON_Parse("{\"principalId\":\"user-1\",\"integrationLatency\":3}");
    rw_event_route_t r = rest_route();
    rw_event_request_t rq = request("GET", "/", NULL, 0);
    r.identity = &id;
    r.authorizer = auth;
    r.stage_vars = sv;
    r.n_stage_vars = 1;
    cJSON *ev = build(&r, &rq);

    assert_string_equal(str_at(ev, "requestContext/identity/apiKey"), "k3y");
    assert_string_equal(str_at(ev, "requestContext/identity/apiKeyId"), "kid");
    assert_string_equal(str_at(ev, "requestContext/identity/caller"), "me");
    assert_string_equal(str_at(ev, "requestContext/identity/sourceIp"), "198.51.100.7");
    expect_json(ev, "requestContext/authorizer",
                "{\"principalId\":\"user-1\",\"integrationLatency\":3}");
    assert_string_equal(str_at(ev, "stageVariables/table"), "reels");
    assert_string_equal(str_at(ev, "requestContext/extendedRequestId"), "req-1");
    cJSON_Delete(ev);
    cJSON_Delete(auth);
}

static void http_api_v1_has_version_and_empty_authorizer(void **state)
{
    (void)state;
    rw_event_route_t r = rest_route();
    rw_event_request_t rq = request("GET", "/x", NULL, 0);
    r.http_api = true;
    r.resource_path = NULL; /* a $default route */
    cJSON *ev = build(&r, &rq);

    assert_string_equal(str_at(ev, "version"), "1.0");
    expect_json(ev, "requestContext/authorizer", "{\"claims\":null,\"scopes\":null}");
    assert_string_equal(str_at(ev, "resource"), "/x");
    assert_string_equal(str_at(ev, "headers/Content-Length"), "0");
    cJSON_Delete(ev);
}

/* Decodes a base64 body with OpenSSL, an independent implementation. */
static unsigned char *openssl_decode(const char *b64, size_t *len)
{
    size_t n = strlen(b64);
    unsigned char *out = malloc(n / 4 * 3 + 3);
    int got = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
    assert_true(got >= 0);
    while (n > 0 && b64[n - 1] == '=') {
        n--;
        got--;
    }
    *len = (size_t)got;
    return out;
}

static void expect_body(const rw_event_route_t *r, const rw_event_request_t *rq, bool binary)
{
    cJSON *ev = build(r, rq);
    const char *body = str_at(ev, "body");
    if (cJSON_IsTrue(at(ev, "isBase64Encoded")) != binary)
        fail_msg("content-type case: expected isBase64Encoded %d, got %s", binary,
                 cJSON_PrintUnformatted(at(ev, "isBase64Encoded")));
    if (binary) {
        size_t n;
        unsigned char *raw = openssl_decode(body, &n);
        assert_int_equal(n, rq->body_len);
        assert_memory_equal(raw, rq->body, n);
        free(raw);
    } else {
        assert_int_equal(strlen(body), rq->body_len);
        assert_memory_equal(body, rq->body, rq->body_len);
    }
    cJSON_Delete(ev);
}

static void http_api_binary_detection(void **state)
{
    (void)state;
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0xff};
    static const char text[] = "{\"caption\":\"caf\xc3\xa9\"}";
    static const char not_utf8[] = "caf\xe9";
    static const struct {
        const char *ct; /* NULL: no Content-Type */
        const void *body;
        size_t len;
        bool binary;
    } cases[] = {
        {"image/png", png, sizeof(png), true},
        {"application/octet-stream", text, sizeof(text) - 1, true},
        {NULL, text, sizeof(text) - 1, true},
        {"application/x-www-form-urlencoded", "a=1", 3, true},
        {"application/json", text, sizeof(text) - 1, false},
        {"Application/JSON; charset=utf-8", text, sizeof(text) - 1, false},
        {"text/plain", text, sizeof(text) - 1, false},
        {"text/csv;charset=utf-8", "a,b", 3, false},
        {"application/xml", "<a/>", 4, false},
        {"application/javascript", "1", 1, false},
        {"application/vnd.api+json", text, sizeof(text) - 1, true},
        {"text/plain", not_utf8, sizeof(not_utf8) - 1, true},
        {"application/json", png, sizeof(png), true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rw_event_kv_t h[1] = {
            {"Content-Type", 12, cases[i].ct, cases[i].ct ? strlen(cases[i].ct) : 0}};
        rw_event_route_t r = v2_route();
        rw_event_request_t rq = request("POST", "/u", h, cases[i].ct ? 1 : 0);
        rq.body = cases[i].body;
        rq.body_len = cases[i].len;
        print_message("case %zu: %s\n", i, cases[i].ct ? cases[i].ct : "(none)");
        expect_body(&r, &rq, cases[i].binary);
        assert_int_equal(rw_event_body_is_binary(&r, &rq), cases[i].binary);
    }
}

static void rest_binary_media_types(void **state)
{
    (void)state;
    static const char text[] = "hello";
    static const char not_utf8[] = "\xff\xfe";
    static const char *const png_only[] = {"image/png"}, *const images[] = {"image/*"},
                             *const all[] = {"*/*"};
    static const struct {
        const char *const *types;
        size_t n;
        const char *ct;
        const char *body;
        size_t len;
        bool binary;
    } cases[] = {
        {NULL, 0, "image/png", text, 5, false},
        {png_only, 1, "image/png", text, 5, true},
        {png_only, 1, "IMAGE/PNG; q=1", text, 5, true},
        {png_only, 1, "image/jpeg", text, 5, false},
        {images, 1, "image/jpeg", text, 5, true},
        {images, 1, "text/plain", text, 5, false},
        {all, 1, "text/plain", text, 5, true},
        {all, 1, NULL, text, 5, false},
        {NULL, 0, NULL, text, 5, false},
        {NULL, 0, "text/plain", not_utf8, 2, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rw_event_kv_t h[1] = {
            {"Content-Type", 12, cases[i].ct, cases[i].ct ? strlen(cases[i].ct) : 0}};
        rw_event_route_t r = rest_route();
        rw_event_request_t rq = request("PUT", "/u", h, cases[i].ct ? 1 : 0);
        r.binary_media_types = cases[i].types;
        r.n_binary_media_types = cases[i].n;
        rq.body = cases[i].body;
        rq.body_len = cases[i].len;
        print_message("case %zu\n", i);
        expect_body(&r, &rq, cases[i].binary);
    }
}

static void media_type_patterns(void **state)
{
    (void)state;
    assert_true(rw_event_media_type_match("image/png", "image/png", 9));
    assert_true(rw_event_media_type_match("image/png", " Image/PNG ; charset=x", 22));
    assert_false(rw_event_media_type_match("image/png", "image/pngx", 10));
    assert_true(rw_event_media_type_match("image/*", "image/webp", 10));
    assert_false(rw_event_media_type_match("image/*", "imagex/webp", 11));
    assert_false(rw_event_media_type_match("image/*", "video/mp4", 9));
    assert_true(rw_event_media_type_match("*/*", "application/zip", 15));
    assert_false(rw_event_media_type_match("*/*", "garbage", 7));
    assert_false(rw_event_media_type_match("*/*", "", 0));
    /* The first entry of an Accept list decides. */
    assert_true(rw_event_media_type_match("image/webp", "image/webp,image/*;q=0.8", 24));
    assert_false(rw_event_media_type_match("image/png", "text/html, image/png", 20));
}

static void forwarded_and_trace_headers(void **state)
{
    (void)state;
    rw_event_kv_t h[] = {H("X-Forwarded-For", "203.0.113.9"), H("X-Forwarded-Proto", "https"),
                         H("X-Forwarded-Port", "1"), H("X-Amzn-Trace-Id", "Root=forged"),
                         H("X-Forwarded-For", "10.0.0.1")};
    rw_event_route_t r1 = rest_route(), r2 = v2_route();
    rw_event_request_t rq = request("GET", "/", h, 5);
    rq.forwarded_proto = "http";
    rq.forwarded_port = 8080;
    rq.trace_id = "Root=1-5e66d96f-7491f09a79d18acf3d050aaa";
    cJSON *ev1 = build(&r1, &rq), *ev2 = build(&r2, &rq);

    assert_string_equal(str_at(ev1, "headers/X-Forwarded-For"),
                        "203.0.113.9, 10.0.0.1, 198.51.100.7");
    expect_json(ev1, "multiValueHeaders/X-Forwarded-For",
                "[\"203.0.113.9, 10.0.0.1, 198.51.100.7\"]");
    assert_string_equal(str_at(ev1, "headers/X-Forwarded-Proto"), "http");
    assert_string_equal(str_at(ev1, "headers/X-Forwarded-Port"), "8080");
    expect_json(ev1, "multiValueHeaders/X-Amzn-Trace-Id",
                "[\"Root=1-5e66d96f-7491f09a79d18acf3d050aaa\"]");
    assert_string_equal(str_at(ev2, "headers/x-forwarded-for"),
                        "203.0.113.9, 10.0.0.1, 198.51.100.7");
    assert_string_equal(str_at(ev2, "headers/x-amzn-trace-id"),
                        "Root=1-5e66d96f-7491f09a79d18acf3d050aaa");
    cJSON_Delete(ev1);
    cJSON_Delete(ev2);

    /* Without forwarded_proto the client's headers pass untouched. */
    rq.forwarded_proto = NULL;
    rq.trace_id = NULL;
    ev1 = build(&r1, &rq);
    expect_json(ev1, "multiValueHeaders/X-Forwarded-For", "[\"203.0.113.9\",\"10.0.0.1\"]");
    assert_string_equal(str_at(ev1, "headers/X-Amzn-Trace-Id"), "Root=forged");
    cJSON_Delete(ev1);
}

static void chunked_body_gets_a_length(void **state)
{
    (void)state;
    rw_event_kv_t h[] = {H("Transfer-Encoding", "chunked"), H("Content-Type", "text/plain")};
    rw_event_route_t r1 = rest_route(), r2 = v2_route();
    rw_event_request_t rq = request("POST", "/", h, 2);
    rq.body = "hello world";
    rq.body_len = 11;
    cJSON *ev1 = build(&r1, &rq), *ev2 = build(&r2, &rq);

    expect_absent(ev1, "headers/Transfer-Encoding");
    assert_string_equal(str_at(ev1, "headers/Content-Length"), "11");
    expect_absent(ev2, "headers/transfer-encoding");
    assert_string_equal(str_at(ev2, "headers/content-length"), "11");
    assert_string_equal(str_at(ev2, "body"), "hello world");
    cJSON_Delete(ev1);
    cJSON_Delete(ev2);
}

static void hostile_bytes_still_give_valid_json(void **state)
{
    (void)state;
    /* Invalid UTF-8, an overlong '/', a surrogate, quotes, backslashes and
     * control characters in names, values and parameters. */
    rw_event_kv_t h[] = {{"X-Bad", 5,
                          "a\xff"
                          "b\xc0\xaf"
                          "c\xed\xa0\x80"
                          "d",
                          10},
                         H("X-Quote", "\"\\\x01\x1f\t"),
                         H("X-Ok", "caf\xc3\xa9 \xf0\x9f\x98\x80")};
    rw_event_route_t r2 = v2_route(), r1 = rest_route();
    rw_event_request_t rq = request("GET", "/p%FF%22?k%FF=%C3%28&q=%00", h, 3);
    cJSON *ev2 = build(&r2, &rq), *ev1 = build(&r1, &rq);

    assert_string_equal(str_at(ev2, "headers/x-bad"), "a\xef\xbf\xbd"
                                                      "b\xef\xbf\xbd\xef\xbf\xbd"
                                                      "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                                      "d");
    assert_string_equal(str_at(ev2, "headers/x-quote"), "\"\\\x01\x1f\t");
    assert_string_equal(str_at(ev2, "headers/x-ok"), "caf\xc3\xa9 \xf0\x9f\x98\x80");
    assert_string_equal(str_at(ev2, "requestContext/http/path"), "/p\xef\xbf\xbd\"");
    assert_string_equal(str_at(ev2, "queryStringParameters/k\xef\xbf\xbd"), "\xef\xbf\xbd(");
    assert_string_equal(str_at(ev1, "queryStringParameters/k\xef\xbf\xbd"), "\xef\xbf\xbd(");
    cJSON_Delete(ev2);
    cJSON_Delete(ev1);
}

static void large_body_round_trips(void **state)
{
    (void)state;
    size_t n = 3 * 1024 * 1024 + 1;
    unsigned char *body = malloc(n);
    rw_event_kv_t h[] = {H("Content-Type", "application/octet-stream")};
    rw_event_route_t r = v2_route();
    rw_event_request_t rq = request("PUT", "/u", h, 1);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++)
        body[i] = (unsigned char)(i * 2654435761u >> 13);
    rq.body = body;
    rq.body_len = n;
    expect_body(&r, &rq, true);
    free(body);
}

static void bad_arguments(void **state)
{
    (void)state;
    rw_event_route_t r = v2_route();
    rw_event_request_t rq = request("GET", "/", NULL, 0);
    char *json = (char *)"untouched";
    size_t len = 7;

    assert_int_equal(rw_event_build(NULL, &rq, &json, &len), UV_EINVAL);
    assert_null(json);
    assert_int_equal(rw_event_build(&r, NULL, &json, &len), UV_EINVAL);
    rq.method = NULL;
    assert_int_equal(rw_event_build(&r, &rq, &json, &len), UV_EINVAL);
    rq = request("GET", "/", NULL, 0);
    rq.body_len = 3;
    assert_int_equal(rw_event_build(&r, &rq, &json, &len), UV_EINVAL);
    rq.body_len = 0;
    r.payload_version = 3;
    assert_int_equal(rw_event_build(&r, &rq, &json, &len), UV_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v2_repeated_headers_are_comma_joined_lower_case),
        cmocka_unit_test(v1_headers_keep_last_value_and_all_values),
        cmocka_unit_test(query_parameters_repeated_and_decoded),
        cmocka_unit_test(path_raw_in_raw_path_decoded_in_http_path),
        cmocka_unit_test(cookies_split_and_left_out_of_headers),
        cmocka_unit_test(v2_omits_what_is_absent),
        cmocka_unit_test(v1_puts_null_where_api_gateway_does),
        cmocka_unit_test(v1_identity_authorizer_and_stage_variables),
        cmocka_unit_test(http_api_v1_has_version_and_empty_authorizer),
        cmocka_unit_test(http_api_binary_detection),
        cmocka_unit_test(rest_binary_media_types),
        cmocka_unit_test(media_type_patterns),
        cmocka_unit_test(forwarded_and_trace_headers),
        cmocka_unit_test(chunked_body_gets_a_length),
        cmocka_unit_test(hostile_bytes_still_give_valid_json),
        cmocka_unit_test(large_body_round_trips),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
