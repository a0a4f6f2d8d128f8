/* The gateway's media route: GET/HEAD {ServePath}/{key+} streams a bucket's
 * object (ranges, ETags, conditional requests, caching headers). Private to
 * gateway/. */
#ifndef REELWAY_GATEWAY_MEDIA_H
#define REELWAY_GATEWAY_MEDIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reelway/http.h"

typedef struct rw_gateway_s rw_gateway_t;
typedef struct gw_media_s gw_media_t;

/** Cache-Control of content-addressed keys (see rw_bucket_key_content_addressed). */
#define RW_MEDIA_CACHE_IMMUTABLE "public, max-age=31536000, immutable"
/** Cache-Control of other keys whose put gave none: short, revalidated by ETag. */
#define RW_MEDIA_CACHE_DEFAULT "public, max-age=60"
/** Where a bucket is served when no bucket of the template names a ServePath. */
#define RW_MEDIA_DEFAULT_SERVE_PATH "/media"

/**
 * Opens the buckets the template serves (every bucket with a ServePath; when
 * none has one, the first filesystem bucket at /media unless an API holds
 * routes there). Blocking (directories are made and checked): call at start.
 * Sets gw->media. Returns 0, or a negative error with the reason in why.
 */
int rw__media_build(rw_gateway_t *gw, char *why, size_t whylen);

/** Closes the buckets. Every media request must be over (gw->pending_work). */
void rw__media_free(rw_gateway_t *gw);

/**
 * Answers req when its path is under a served bucket's ServePath (and no API
 * with a longer mount claims it); returns false, touching nothing, otherwise.
 * Runs on the loop thread; the bucket's I/O goes to the threadpool.
 */
bool rw__media_route(rw_gateway_t *gw, rw_http_req_t *req);

/* Exposed for unit tests: the header parsers of the route. */

/**
 * Parses a Range header against an object of size bytes. Returns 1 with the
 * inclusive [*first, *last] for one satisfiable byte range, -1 when the
 * ranges cannot be satisfied (416), 0 when the header is to be ignored (not
 * bytes, malformed, or several ranges: the whole object is sent).
 */
int rw__media_parse_range(const char *value, uint64_t size, uint64_t *first, uint64_t *last);

/** Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime); false when invalid. */
bool rw__media_parse_date(const char *value, int64_t *out);

/**
 * True when the entity-tag list in value ("*", or quoted tags, W/ allowed)
 * holds etag_hex: weak comparison (If-None-Match) unless strong, where weak
 * tags never match (If-Match).
 */
bool rw__media_etag_match(const char *value, const char *etag_hex, bool strong);

#endif
