/* The runtime's byte formats: log lines as Lambda's runtimes write them, the
 * error document, the HTTP-integration prelude and base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "reelway/runtime.h"

static void log_line_has_lambda_fields(void **state)
{
    char buf[256];
    /* 2024-05-01T12:34:56.789Z */
    size_t n = rw_runtime_log_format(buf, sizeof buf, 1714566896789LL, "8476a536-e9f4-11e8",
                                     RW_RUNTIME_INFO, "hello");
    assert_string_equal(buf, "2024-05-01T12:34:56.789Z\t8476a536-e9f4-11e8\tINFO\thello\n");
    assert_int_equal(n, strlen(buf));

    rw_runtime_log_format(buf, sizeof buf, 0, NULL, RW_RUNTIME_ERROR, "x");
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z\t\tERROR\tx\n");
    rw_runtime_log_format(buf, sizeof buf, 5, "r", RW_RUNTIME_WARN, "");
    assert_string_equal(buf, "1970-01-01T00:00:00.005Z\tr\tWARN\t\n");
}

static void log_line_keeps_one_event_per_message(void **state)
{
    char buf[256];
    rw_runtime_log_format(buf, sizeof buf, 0, "id", RW_RUNTIME_DEBUG, "line one\nline two\n\n");
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z\tid\tDEBUG\tline one\rline two\n");
    /* exactly one newline, at the end */
    assert_ptr_equal(strchr(buf, '\n'), buf + strlen(buf) - 1);
}

static void log_line_truncates_to_fit(void **state)
{
    char big[600];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char buf[100];
    memset(buf, 0x55, sizeof buf);
    size_t n = rw_runtime_log_format(buf, sizeof buf, 0, "id", RW_RUNTIME_FATAL, big);
    assert_int_equal(n, sizeof buf - 1);
    assert_int_equal(buf[n - 1], '\n');
    assert_int_equal(buf[n], '\0');
    assert_non_null(strstr(buf, "\tFATAL\tmmm"));
}

static void level_names(void **state)
{
    assert_string_equal(rw_runtime_level_name(RW_RUNTIME_DEBUG), "DEBUG");
    assert_string_equal(rw_runtime_level_name(RW_RUNTIME_INFO), "INFO");
    assert_string_equal(rw_runtime_level_name(RW_RUNTIME_WARN), "WARN");
    assert_string_equal(rw_runtime_level_name(RW_RUNTIME_ERROR), "ERROR");
    assert_string_equal(rw_runtime_level_name(RW_RUNTIME_FATAL), "FATAL");
}

static void error_json_is_lambdas_document(void **state)
{
    size_t len = 0;
    char *doc = rw_runtime_error_json("Custom.Bad", "it \"broke\"\n", &len);
    assert_non_null(doc);
    assert_string_equal(doc,
                        "{\"errorMessage\":\"it \\\"broke\\\"\\n\",\"errorType\":\"Custom.Bad\","
                        "\"stackTrace\":[]}");
    assert_int_equal(len, strlen(doc));
    free(doc);

    doc = rw_runtime_error_json(NULL, NULL, NULL);
    assert_string_equal(doc, "{\"errorMessage\":\"\",\"errorType\":\"Error\",\"stackTrace\":[]}");
    free(doc);
}

static void prelude_is_json_then_eight_nuls(void **state)
{
    cJSON *headers = cJSON_Parse("{\"content-type\":\"text/plain\",\"x-a\":\"b\"}");
    cJSON *cookies = cJSON_Parse("[\"a=1\",\"b=2; Secure\"]");
    size_t len = 0;
    char *p = rw_runtime_prelude(201, headers, cookies, &len);
    assert_non_null(p);
    const char *json = "{\"statusCode\":201,\"headers\":{\"content-type\":\"text/plain\",\"x-a\":"
                       "\"b\"},\"cookies\":[\"a=1\",\"b=2; Secure\"]}";
    assert_int_equal(len, strlen(json) + 8);
    assert_memory_equal(p, json, strlen(json));
    static const char zeros[8];
    assert_memory_equal(p + strlen(json), zeros, 8);
    free(p);

    p = rw_runtime_prelude(404, NULL, NULL, &len);
    assert_int_equal(len, strlen("{\"statusCode\":404}") + 8);
    assert_memory_equal(p, "{\"statusCode\":404}", len - 8);
    free(p);

    /* headers must be an object, cookies an array */
    assert_null(rw_runtime_prelude(200, cookies, NULL, &len));
    assert_null(rw_runtime_prelude(200, NULL, headers, &len));
    cJSON_Delete(headers);
    cJSON_Delete(cookies);
}

static void base64_matches_rfc4648_vectors(void **state)
{
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const out[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        char *b = rw_runtime_base64(in[i], strlen(in[i]));
        assert_string_equal(b, out[i]);
        free(b);
    }
    const unsigned char bin[] = {0xff, 0xfe, 0x00, 0x3f};
    char *b = rw_runtime_base64(bin, sizeof bin);
    assert_string_equal(b, "//4APw==");
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(log_line_has_lambda_fields),
        cmocka_unit_test(log_line_keeps_one_event_per_message),
        cmocka_unit_test(log_line_truncates_to_fit),
        cmocka_unit_test(level_names),
        cmocka_unit_test(error_json_is_lambdas_document),
        cmocka_unit_test(prelude_is_json_then_eight_nuls),
        cmocka_unit_test(base64_matches_rfc4648_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
