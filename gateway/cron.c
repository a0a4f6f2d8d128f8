/* Schedule expressions (cron.h): a cron's six fields compiled into bit sets,
 * and the next due time found by skipping whole years, months, days and
 * hours that cannot match, so that a rare expression costs little. */
#include "cron.h"

#include "reelway/error.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const day_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

typedef struct field_s {
    const char *name;
    int min, max;
    const char *const *names; /* for min, min + 1, ... */
    int n_names;
} field_t;

static const field_t fields_info[6] = {
    {"minutes", 0, 59, NULL, 0},      {"hours", 0, 23, NULL, 0},
    {"day-of-month", 1, 31, NULL, 0}, {"month", 1, 12, month_names, 12},
    {"day-of-week", 1, 7, day_names, 7}, {"year", RW_CRON_YEAR_MIN, RW_CRON_YEAR_MAX, NULL, 0}};

static bool value_of(const field_t *f, const char *s, size_t n, int *out)
{
    if (n == 0)
        return false;
    for (int i = 0; i < f->n_names; i++)
        if (n == 3 && strncasecmp(s, f->names[i], 3) == 0) {
            *out = f->min + i;
            return true;
        }
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > 100000)
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < f->min || v > f->max)
        return false;
    *out = v;
    return true;
}

/* Sets bit v - base in a bit set of up to 256 bits. */
static void set_bit(uint64_t *bits, int v)
{
    bits[v / 64] |= (uint64_t)1 << (v % 64);
}

static bool test_bit(const uint64_t *bits, int v)
{
    return (bits[v / 64] >> (v % 64)) & 1;
}

/* One comma-separated item that is a value, a range, a step or "*": sets its
 * values (offset by the field's base for the year) in bits. */
static bool plain_item(const field_t *f, const char *s, size_t n, uint64_t *bits, int base)
{
    int lo = f->min, hi = f->max, step = 1;
    const char *slash = memchr(s, '/', n);
    size_t head = slash ? (size_t)(slash - s) : n;
    if (slash) {
        size_t sl = n - head - 1;
        if (sl == 0 || sl > 5)
            return false;
        step = 0;
        for (size_t i = 0; i < sl; i++) {
            if (slash[1 + i] < '0' || slash[1 + i] > '9')
                return false;
            step = step * 10 + (slash[1 + i] - '0');
        }
        if (step < 1 || step > f->max)
            return false;
    }
    if (head == 1 && s[0] == '*') {
        /* "*" or "* /s": the whole range */
    } else {
        const char *dash = memchr(s, '-', head);
        if (dash) {
            if (!value_of(f, s, (size_t)(dash - s), &lo) ||
                !value_of(f, dash + 1, head - (size_t)(dash - s) - 1, &hi) || lo > hi)
                return false;
        } else {
            if (!value_of(f, s, head, &lo))
                return false;
            /* "a/s" runs from a to the end of the range; a lone value is itself. */
            hi = slash ? f->max : lo;
        }
    }
    for (int v = lo; v <= hi; v += step)
        set_bit(bits, v - base);
    return true;
}

int rw_cron_parse(rw_cron_t *c, const char *const fields[6], char *why, size_t whylen)
{
    memset(c, 0, sizeof *c);
    for (int fi = 0; fi < 6; fi++) {
        const field_t *f = &fields_info[fi];
        const char *s = fields[fi];
        if (!s || !*s || (strcmp(s, "?") == 0 && fi != 2 && fi != 4)) {
            snprintf(why, whylen, "the %s field is empty or a misplaced ?", f->name);
            return RW_EPARSE;
        }
        if (strcmp(s, "?") == 0)
            continue;
        if (fi == 2)
            c->dom_set = true;
        uint64_t bits[4] = {0, 0, 0, 0};
        for (const char *p = s; *p;) {
            size_t n = strcspn(p, ",");
            int v, k;
            bool ok;
            if (fi == 2 && n == 1 && p[0] == 'L') {
                c->dom_last = ok = true;
            } else if (fi == 2 && n == 2 && strncmp(p, "LW", 2) == 0) {
                c->dom_last_weekday = ok = true;
            } else if (fi == 2 && n >= 2 && p[n - 1] == 'W') {
                ok = value_of(f, p, n - 1, &v);
                if (ok)
                    c->dom_nearest |= (uint32_t)1 << v;
            } else if (fi == 4 && n == 1 && p[0] == 'L') {
                ok = true;
                set_bit(bits, 7); /* the last day of the week: Saturday */
            } else if (fi == 4 && n >= 2 && p[n - 1] == 'L') {
                ok = value_of(f, p, n - 1, &v);
                if (ok)
                    c->dow_last |= (uint8_t)(1 << v);
            } else if (fi == 4 && memchr(p, '#', n)) {
                const char *hash = memchr(p, '#', n);
                k = hash[1] - '0';
                ok = value_of(f, p, (size_t)(hash - p), &v) && (size_t)(hash - p) + 2 == n &&
                     k >= 1 && k <= 5;
                if (ok)
                    c->dow_nth[v] |= (uint8_t)(1 << k);
            } else {
                ok = plain_item(f, p, n, bits, fi == 5 ? RW_CRON_YEAR_MIN : 0);
            }
            if (!ok) {
                snprintf(why, whylen, "'%.*s' is not a valid %s", (int)n, p, f->name);
                return RW_EPARSE;
            }
            p += n;
            if (*p == ',')
                p++;
        }
        switch (fi) {
        case 0:
            c->minutes = bits[0];
            break;
        case 1:
            c->hours = (uint32_t)bits[0];
            break;
        case 2:
            c->dom = (uint32_t)bits[0];
            break;
        case 3:
            c->months = (uint32_t)bits[0];
            break;
        case 4:
            c->dow = (uint8_t)bits[0];
            break;
        case 5:
            memcpy(c->years, bits, sizeof bits);
            break;
        }
    }
    if (c->dom_set == (strcmp(fields[4], "?") != 0)) {
        snprintf(why, whylen, "exactly one of day-of-month and day-of-week must be ?");
        return RW_EPARSE;
    }
    return 0;
}

/* ---- the next due time --------------------------------------------------------- */

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

/* 1 = Sunday .. 7 = Saturday (Zeller-free: from the epoch's Thursday). */
static int weekday(int y, int m, int d)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    return (int)(((t / 86400) % 7 + 7 + 4) % 7) + 1;
}

static int nearest_weekday(int y, int m, int n)
{
    int dim = days_in_month(y, m);
    if (n > dim)
        return -1;
    int wd = weekday(y, m, n);
    if (wd == 7) /* Saturday: the Friday before, or the Monday after the 1st */
        return n > 1 ? n - 1 : n + 2;
    if (wd == 1) /* Sunday: the Monday after, or the Friday before the month's end */
        return n < dim ? n + 1 : n - 2;
    return n;
}

static bool day_matches(const rw_cron_t *c, int y, int m, int d)
{
    int dim = days_in_month(y, m);
    if (c->dom_set) {
        if ((c->dom >> d) & 1)
            return true;
        if (c->dom_last && d == dim)
            return true;
        if (c->dom_last_weekday) {
            int last = dim, wd = weekday(y, m, dim);
            if (wd == 7)
                last = dim - 1;
            else if (wd == 1)
                last = dim - 2;
            if (d == last)
                return true;
        }
        for (int n = 1; n <= 31 && c->dom_nearest; n++)
            if (((c->dom_nearest >> n) & 1) && nearest_weekday(y, m, n) == d)
                return true;
        return false;
    }
    int wd = weekday(y, m, d);
    if ((c->dow >> wd) & 1)
        return true;
    if (((c->dow_last >> wd) & 1) && d + 7 > dim)
        return true;
    return ((c->dow_nth[wd] >> ((d - 1) / 7 + 1)) & 1) != 0;
}

static int64_t at(int y, int m, int d, int h, int mi)
{
    /* timegm normalizes day 32, hour 24, month 13 into the next unit. */
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm);
}

int64_t rw_cron_next(const rw_cron_t *c, int64_t after_s)
{
    int64_t t = (after_s >= 0 ? after_s / 60 + 1 : 0) * 60;
    /* Each turn skips at least a minute, most skip a whole hour, day, month or
     * year; a day that never comes (February 30th) ends at the last year. */
    for (int turns = 0; turns < 1000000; turns++) {
        time_t tt = (time_t)t;
        struct tm tm;
        if (!gmtime_r(&tt, &tm))
            return -1;
        int y = tm.tm_year + 1900, m = tm.tm_mon + 1, d = tm.tm_mday;
        if (y > RW_CRON_YEAR_MAX)
            return -1;
        if (y < RW_CRON_YEAR_MIN || !test_bit(c->years, y - RW_CRON_YEAR_MIN)) {
            t = at(y + 1, 1, 1, 0, 0);
            continue;
        }
        if (!((c->months >> m) & 1)) {
            t = at(y, m + 1, 1, 0, 0);
            continue;
        }
        if (!day_matches(c, y, m, d)) {
            t = at(y, m, d + 1, 0, 0);
            continue;
        }
        if (!((c->hours >> tm.tm_hour) & 1)) {
            t = at(y, m, d, tm.tm_hour + 1, 0);
            continue;
        }
        if (!((c->minutes >> tm.tm_min) & 1)) {
            t += 60;
            continue;
        }
        return t;
    }
    return -1;
}

int64_t rw_rate_next(int64_t period_s, int64_t after_s)
{
    if (period_s <= 0)
        return -1;
    int64_t k = after_s >= 0 ? after_s / period_s + 1 : 0;
    return k * period_s;
}
