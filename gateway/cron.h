/* Schedule expressions as EventBridge reads them: cron(min hour day-of-month
 * month day-of-week year) and rate(N unit), compiled once and asked for the
 * next due time. Private to the gateway.
 *
 * Everything is UTC, at whole seconds since the epoch. A cron fires at the
 * start of each matching minute. Day-of-month takes *, ?, numbers, ranges,
 * steps (a/s, a-b/s, star/s), L (last day), LW (last weekday), nW (the weekday
 * nearest day n, never crossing into another month). Day-of-week counts
 * 1 = SUN to 7 = SAT (or SUN..SAT) and takes L (the last day of the week:
 * Saturday), dL (the month's last d-day) and d#k (its k-th d-day). Exactly
 * one of the two day fields is "?" (the template loader checks it). Years run
 * from 1970 to 2199: after that a cron never fires again.
 *
 * The functions here are pure: any thread. */
#ifndef REELWAY_GATEWAY_CRON_H
#define REELWAY_GATEWAY_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** First and last year a cron expression can name. */
#define RW_CRON_YEAR_MIN 1970
#define RW_CRON_YEAR_MAX 2199

/** A compiled cron expression (bit sets; see rw_cron_parse). */
typedef struct rw_cron_s {
    uint64_t minutes; /**< bit m: minute m (0..59) */
    uint32_t hours;   /**< bit h: hour h (0..23) */
    uint32_t months;  /**< bit m: month m (1..12) */
    bool dom_set;     /**< day-of-month decides (day-of-week is "?") */
    uint32_t dom;     /**< bit d: day d (1..31) */
    bool dom_last;    /**< L */
    bool dom_last_weekday;  /**< LW */
    uint32_t dom_nearest;   /**< bit n: nW, the weekday nearest day n */
    uint8_t dow;            /**< bit d: weekday d (1 = Sunday .. 7 = Saturday) */
    uint8_t dow_last;       /**< bit d: the month's last d-day (dL) */
    uint8_t dow_nth[8];     /**< dow_nth[d] bit k: the k-th d-day of the month (d#k) */
    uint64_t years[4];      /**< bit y - 1970 */
} rw_cron_t;

/**
 * Compiles the six fields of a cron expression (minutes hours day-of-month
 * month day-of-week year; borrowed for the call). Returns 0, or RW_EPARSE
 * with the reason in why.
 */
int rw_cron_parse(rw_cron_t *c, const char *const fields[6], char *why, size_t whylen);

/** The first minute after after_s (seconds since the epoch) that c matches, or -1 (never). */
int64_t rw_cron_next(const rw_cron_t *c, int64_t after_s);

/** The first multiple of period_s (> 0) since the epoch after after_s. */
int64_t rw_rate_next(int64_t period_s, int64_t after_s);

#endif
