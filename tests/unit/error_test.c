/* The shared error table: every reelway code has its own name and message,
 * and libuv's codes pass through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <uv.h>

#include "reelway/error.h"

static void codes_have_distinct_names_and_messages(void **state)
{
    (void)state;
    for (int a = RW_ERR_BASE - 1; a > RW_ERR_LAST; a--) {
        assert_string_not_equal(rw_err_name(a), "UNKNOWN");
        assert_non_null(strstr(rw_err_name(a), "RW_E"));
        for (int b = a - 1; b > RW_ERR_LAST; b--) {
            assert_string_not_equal(rw_err_name(a), rw_err_name(b));
            assert_string_not_equal(rw_strerror(a), rw_strerror(b));
        }
    }
}

static void libuv_codes_pass_through(void **state)
{
    (void)state;
    assert_string_equal(rw_err_name(UV_ECONNRESET), "ECONNRESET");
    assert_string_equal(rw_strerror(UV_ENOENT), uv_strerror(UV_ENOENT));
    assert_string_equal(rw_strerror(0), "success");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codes_have_distinct_names_and_messages),
        cmocka_unit_test(libuv_codes_pass_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
