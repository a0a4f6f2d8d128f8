/* The media route's header parsers: Range (RFC 9110 14.1), HTTP-date in its
 * three formats (5.6.7) and entity-tag lists (8.8.3, 13.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "media.h"

static void range_is(const char *v, uint64_t size, int want, uint64_t first, uint64_t last)
{
    uint64_t f = 12345, l = 12345;
    int rc = rw__media_parse_range(v, size, &f, &l);
    if (rc != want)
        print_error("Range '%s' on %llu bytes: %d, want %d\n", v, (unsigned long long)size, rc,
                    want);
    assert_int_equal(rc, want);
    if (want == 1) {
        assert_int_equal(f, first);
        assert_int_equal(l, last);
    }
}

static void range_forms(void **state)
{
    range_is("bytes=0-0", 10, 1, 0, 0);
    range_is("bytes=0-9", 10, 1, 0, 9);
    range_is("bytes=3-", 10, 1, 3, 9);
    range_is("bytes=-4", 10, 1, 6, 9);
    range_is("bytes=-10", 10, 1, 0, 9);
    range_is("bytes=-11", 10, 1, 0, 9);
    range_is("bytes=2-100", 10, 1, 2, 9);
    range_is("bytes=2-18446744073709551615", 10, 1, 2, 9);
    range_is("bytes=2-99999999999999999999999999", 10, 1, 2, 9);
    range_is("BYTES = 1-2", 10, 1, 1, 2);
    range_is("bytes=1-2 ,", 10, 1, 1, 2);
    range_is("bytes=,1-2", 10, 1, 1, 2);
    range_is(" bytes=9-", 10, 1, 9, 9);
}

static void range_unsatisfiable(void **state)
{
    range_is("bytes=10-", 10, -1, 0, 0);
    range_is("bytes=10-20", 10, -1, 0, 0);
    range_is("bytes=-0", 10, -1, 0, 0);
    range_is("bytes=0-", 0, -1, 0, 0);
    range_is("bytes=-5", 0, -1, 0, 0);
    range_is("bytes=99999999999999999999999-", 10, -1, 0, 0);
    range_is("bytes=10-11, 12-", 10, -1, 0, 0); /* all of them */
}

static void range_ignored(void **state)
{
    range_is("bytes=5-2", 10, 0, 0, 0); /* last < first: invalid */
    range_is("bytes=", 10, 0, 0, 0);
    range_is("bytes=,", 10, 0, 0, 0);
    range_is("bytes=a-b", 10, 0, 0, 0);
    range_is("bytes=1", 10, 0, 0, 0);
    range_is("bytes=-", 10, 0, 0, 0);
    range_is("bytes=1-2-3", 10, 0, 0, 0);
    range_is("bytes=+1-2", 10, 0, 0, 0);
    range_is("bytes=1 -2", 10, 0, 0, 0);
    range_is("bytes 1-2", 10, 0, 0, 0);
    range_is("items=1-2", 10, 0, 0, 0);
    range_is("bytesx=1-2", 10, 0, 0, 0);
    range_is("", 10, 0, 0, 0);
    /* Several ranges: the whole object. */
    range_is("bytes=0-1,3-4", 10, 0, 0, 0);
    range_is("bytes=0-1,20-30", 10, 0, 0, 0);
    range_is("bytes=-1,-2", 10, 0, 0, 0);
}

static void date_is(const char *v, bool ok, int64_t want)
{
    int64_t t = -1;
    bool got = rw__media_parse_date(v, &t);
    if (got != ok)
        print_error("date '%s': %d, want %d\n", v, got, ok);
    assert_int_equal(got, ok);
    if (ok)
        assert_int_equal(t, want);
}

static void dates(void **state)
{
    /* RFC 9110's example, 784111777, in the three formats. */
    date_is("Sun, 06 Nov 1994 08:49:37 GMT", true, 784111777);
    date_is("Sunday, 06-Nov-94 08:49:37 GMT", true, 784111777);
    date_is("Sun Nov  6 08:49:37 1994", true, 784111777);
    date_is("  Sun, 06 Nov 1994 08:49:37 GMT  ", true, 784111777);
    date_is("Thu, 01 Jan 1970 00:00:00 GMT", true, 0);
    date_is("Fri, 31 Dec 2100 23:59:59 GMT", true, 4133980799);
    date_is("Sun Nov 16 08:49:37 1994", true, 784111777 + 10 * 86400);
    /* What rw_http_date writes reads back. */
    char buf[40];
    rw_http_date(buf, sizeof buf, 1700000000);
    date_is(buf, true, 1700000000);
    /* Not dates. */
    date_is("", false, 0);
    date_is("yesterday", false, 0);
    date_is("Sun, 06 Nov 1994 08:49:37 UTC", false, 0);
    date_is("Sun, 06 Xyz 1994 08:49:37 GMT", false, 0);
    date_is("Sun, 32 Nov 1994 08:49:37 GMT", false, 0);
    date_is("Sun, 06 Nov 1994 25:49:37 GMT", false, 0);
    date_is("Sun, 06 Nov 1994 08:49 GMT", false, 0);
    date_is("Sun, 6 Nov 1994 08:49:37 GMT", false, 0);
    date_is("1994-11-06T08:49:37Z", false, 0);
    date_is("784111777", false, 0);
}

static void two_digit_years(void **state)
{
    /* More than 50 years ahead means the past century (RFC 9110 5.6.7). */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    int yy = (tm.tm_year + 1900 + 60) % 100; /* 60 years ahead: last century */
    char v[64];
    snprintf(v, sizeof v, "Monday, 01-Jan-%02d 00:00:00 GMT", yy);
    int64_t t;
    assert_true(rw__media_parse_date(v, &t));
    assert_true(t < (int64_t)now);
    yy = (tm.tm_year + 1900 + 10) % 100; /* 10 years ahead: this century */
    snprintf(v, sizeof v, "Monday, 01-Jan-%02d 00:00:00 GMT", yy);
    assert_true(rw__media_parse_date(v, &t));
    assert_true(t > (int64_t)now);
}

#define TAG "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void etags(void **state)
{
    assert_true(rw__media_etag_match("\"" TAG "\"", TAG, false));
    assert_true(rw__media_etag_match("\"" TAG "\"", TAG, true));
    assert_true(rw__media_etag_match("*", TAG, false));
    assert_true(rw__media_etag_match(" * ", TAG, true));
    assert_true(rw__media_etag_match("\"a\", \"" TAG "\"", TAG, false));
    assert_true(rw__media_etag_match("\"a\",\"b\" ,  \"" TAG "\"", TAG, false));
    /* Weak tags match weakly only. */
    assert_true(rw__media_etag_match("W/\"" TAG "\"", TAG, false));
    assert_false(rw__media_etag_match("W/\"" TAG "\"", TAG, true));
    assert_true(rw__media_etag_match("\"x\", W/\"" TAG "\"", TAG, false));
    /* Others. */
    assert_false(rw__media_etag_match("\"a\", \"b\"", TAG, false));
    assert_false(rw__media_etag_match(TAG, TAG, false)); /* not quoted */
    assert_false(rw__media_etag_match("\"" TAG, TAG, false));
    assert_false(rw__media_etag_match("\"" TAG "x\"", TAG, false));
    assert_false(rw__media_etag_match("\"x" TAG "\"", TAG, false));
    assert_false(rw__media_etag_match("", TAG, false));
    assert_false(rw__media_etag_match("*, \"a\"", TAG, false)); /* "*" stands alone */
    /* A malformed member does not hide a later good one. */
    assert_true(rw__media_etag_match("junk, \"" TAG "\"", TAG, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(range_forms),     cmocka_unit_test(range_unsatisfiable),
        cmocka_unit_test(range_ignored),   cmocka_unit_test(dates),
        cmocka_unit_test(two_digit_years), cmocka_unit_test(etags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
