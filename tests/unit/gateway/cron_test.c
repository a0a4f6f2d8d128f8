/* Schedule expressions: the next due time of cron and rate expressions as
 * EventBridge defines them, checked against dates worked out by hand (and
 * their weekdays against a calendar). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cron.h"
#include "reelway/error.h"

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm);
}

static void compile(rw_cron_t *c, const char *expr)
{
    char buf[256], *fields[6];
    snprintf(buf, sizeof buf, "%s", expr);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok && n < 6;
         tok = strtok_r(NULL, " ", &save))
        fields[n++] = tok;
    assert_int_equal(n, 6);
    char why[128] = "";
    int rc = rw_cron_parse(c, (const char *const *)fields, why, sizeof why);
    if (rc)
        print_message("%s: %s\n", expr, why);
    assert_int_equal(rc, 0);
}

/* The next due time of expr after the given minute, as "YYYY-MM-DD HH:MM" or "never". */
static void expect_next(const char *expr, int64_t after, const char *want)
{
    rw_cron_t c;
    compile(&c, expr);
    int64_t t = rw_cron_next(&c, after);
    char got[32] = "never";
    if (t >= 0) {
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        strftime(got, sizeof got, "%Y-%m-%d %H:%M", &tm);
        assert_int_equal(t % 60, 0);
    }
    if (strcmp(got, want) != 0)
        print_message("cron(%s) after %lld\n", expr, (long long)after);
    assert_string_equal(got, want);
}

static void plain_fields_ranges_steps_and_names(void **state)
{
    (void)state;
    expect_next("0 12 * * ? *", utc(2024, 3, 10, 13, 0), "2024-03-11 12:00");
    expect_next("0 12 * * ? *", utc(2024, 3, 10, 11, 59), "2024-03-10 12:00");
    /* Strictly after: a due time is never its own successor. */
    expect_next("0 12 * * ? *", utc(2024, 3, 10, 12, 0), "2024-03-11 12:00");
    expect_next("0 12 * * ? *", utc(2024, 3, 10, 12, 0) + 30, "2024-03-11 12:00");
    expect_next("* * * * ? *", utc(2024, 12, 31, 23, 59), "2025-01-01 00:00");
    /* Saturday: the office opens on Monday; the last slot of March is Friday
     * 29th 18:45, and April is not in JAN-MAR: next January's first weekday. */
    const char *office = "0/15 8-18 ? JAN-MAR MON-FRI *";
    expect_next(office, utc(2024, 3, 9, 10, 0), "2024-03-11 08:00");
    expect_next(office, utc(2024, 3, 11, 8, 0), "2024-03-11 08:15");
    expect_next(office, utc(2024, 3, 11, 18, 45), "2024-03-12 08:00");
    expect_next(office, utc(2024, 3, 29, 18, 45), "2025-01-01 08:00");
    expect_next("5,35 */6 1-3 * ? *", utc(2024, 1, 3, 18, 35), "2024-02-01 00:05");
    expect_next("0 0 ? * SUN,7 *", utc(2024, 3, 9, 0, 0), "2024-03-10 00:00");
    expect_next("0 0 ? * 2-3 *", utc(2024, 3, 9, 0, 0), "2024-03-11 00:00");
    expect_next("30 1 ? * 1 *", utc(2024, 3, 9, 0, 0), "2024-03-10 01:30");
}

static void last_days_weekdays_and_nth(void **state)
{
    (void)state;
    expect_next("0 0 L * ? *", utc(2024, 2, 1, 0, 0), "2024-02-29 00:00"); /* leap year */
    expect_next("0 0 L * ? *", utc(2023, 2, 1, 0, 0), "2023-02-28 00:00");
    /* 31 August 2024 is a Saturday: the last weekday is Friday the 30th. */
    expect_next("0 0 LW * ? *", utc(2024, 8, 1, 0, 0), "2024-08-30 00:00");
    /* 1 June 2024 is a Saturday: the weekday nearest the 1st is Monday the 3rd
     * (never Friday 31 May: W does not leave the month). */
    expect_next("0 0 1W * ? *", utc(2024, 5, 31, 0, 0), "2024-06-03 00:00");
    /* 15 September 2024 is a Sunday: Monday the 16th. */
    expect_next("0 0 15W * ? *", utc(2024, 9, 1, 0, 0), "2024-09-16 00:00");
    /* 31 August 2025 is a Sunday: Friday the 29th. */
    expect_next("0 0 31W * ? *", utc(2025, 8, 1, 0, 0), "2025-08-29 00:00");
    /* 31W skips months without a 31st. */
    expect_next("0 0 31W * ? *", utc(2024, 9, 1, 0, 0), "2024-10-31 00:00");
    /* L in day-of-week is Saturday; 6L the month's last Friday; 3#2 the second Tuesday. */
    expect_next("0 0 ? * L *", utc(2024, 3, 4, 0, 0), "2024-03-09 00:00");
    expect_next("0 0 ? * 6L *", utc(2024, 5, 1, 0, 0), "2024-05-31 00:00");
    expect_next("0 10 ? * 3#2 *", utc(2024, 5, 1, 0, 0), "2024-05-14 10:00");
    expect_next("0 10 ? * TUE#5 *", utc(2024, 5, 1, 0, 0), "2024-07-30 10:00");
}

static void years_and_days_that_never_come(void **state)
{
    (void)state;
    expect_next("0 0 1 1 ? 2030", utc(2024, 6, 1, 0, 0), "2030-01-01 00:00");
    expect_next("0 0 1 1 ? 2030", utc(2030, 1, 1, 0, 0), "never");
    expect_next("0 0 1 1 ? 2025-2199/50", utc(2024, 6, 1, 0, 0), "2025-01-01 00:00");
    expect_next("0 0 1 1 ? 2025-2199/50", utc(2025, 6, 1, 0, 0), "2075-01-01 00:00");
    expect_next("0 0 30 2 ? *", utc(2024, 1, 1, 0, 0), "never");
    expect_next("0 0 1 1 ? *", utc(2199, 1, 1, 0, 0), "never");
}

static void rates_are_multiples_of_their_period(void **state)
{
    (void)state;
    assert_int_equal(rw_rate_next(300, 0), 300);
    assert_int_equal(rw_rate_next(300, 299), 300);
    assert_int_equal(rw_rate_next(300, 300), 600);
    assert_int_equal(rw_rate_next(3600, utc(2024, 3, 10, 13, 20)), utc(2024, 3, 10, 14, 0));
    assert_int_equal(rw_rate_next(0, 10), -1);
}

static void bad_fields_are_refused(void **state)
{
    (void)state;
    const char *bad[][6] = {
        {"60", "*", "*", "*", "?", "*"},    {"?", "*", "*", "*", "?", "*"},
        {"0", "*", "*", "*", "*", "*"},     {"0", "*", "?", "*", "?", "*"},
        {"0", "*", "32", "*", "?", "*"},    {"0", "*", "?", "*", "8", "*"},
        {"0", "*", "?", "*", "2#6", "*"},   {"0", "*", "*", "FOO", "?", "*"},
        {"0", "*", "*", "*", "?", "2200"},  {"0", "5-1", "*", "*", "?", "*"},
        {"*/0", "*", "*", "*", "?", "*"},   {"0", "", "*", "*", "?", "*"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rw_cron_t c;
        char why[128] = "";
        int rc = rw_cron_parse(&c, bad[i], why, sizeof why);
        if (rc != RW_EPARSE)
            print_message("case %zu was accepted\n", i);
        assert_int_equal(rc, RW_EPARSE);
        assert_true(why[0] != '\0');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_fields_ranges_steps_and_names),
        cmocka_unit_test(last_days_weekdays_and_nth),
        cmocka_unit_test(years_and_days_that_never_come),
        cmocka_unit_test(rates_are_multiples_of_their_period),
        cmocka_unit_test(bad_fields_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
