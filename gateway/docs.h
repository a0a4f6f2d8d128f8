/* Small helpers over MongoDB documents that the gateway's stores share (the
 * queue, the scheduler): typed reads with a default, the write concern every
 * durable write carries, errors, and reading one document. Private to the gateway. */
#ifndef REELWAY_GATEWAY_DOCS_H
#define REELWAY_GATEWAY_DOCS_H

#include "reelway/error.h"

#include <mongoc/mongoc.h>
#include <stdint.h>
#include <stdio.h>

#define RW_DOCS_WTIMEOUT_MS 10000

/* Every durable write waits for a majority: an acknowledgement must mean the
 * write survives the loss of the primary, and no transition may be rolled back
 * after the next one was built on it. (FerretDB accepts and ignores it.) */
static inline void rw_docs_append_majority(bson_t *opts)
{
    mongoc_write_concern_t *wc = mongoc_write_concern_new();
    mongoc_write_concern_set_wmajority(wc, RW_DOCS_WTIMEOUT_MS);
    mongoc_write_concern_append(wc, opts);
    mongoc_write_concern_destroy(wc);
}

/* The string at key (and its length when len is given), or NULL. */
static inline const char *rw_docs_utf8(const bson_t *doc, const char *key, uint32_t *len)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, len);
    if (len)
        *len = 0;
    return NULL;
}

/* The number at key as an int64, or dflt. */
static inline int64_t rw_docs_int(const bson_t *doc, const char *key, int64_t dflt)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return dflt;
}

/* The date at key in ms since the epoch, or dflt. */
static inline int64_t rw_docs_date(const bson_t *doc, const char *key, int64_t dflt)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return dflt;
}

/* The one adapter from mongoc's errors: RW_EDB, with "what: message" in why. */
static inline int rw_docs_error(const bson_error_t *error, const char *what, char *why,
                                size_t whylen)
{
    if (why && whylen)
        snprintf(why, whylen, "%s: %s", what, error->message);
    return RW_EDB;
}

/* A copy of the first document found (the caller destroys it), or NULL with
 * *rc 0 (none) or < 0 (error, said in why under `what`). */
static inline bson_t *rw_docs_find_one(mongoc_collection_t *coll, const bson_t *filter,
                                       const bson_t *opts, const char *what, int *rc, char *why,
                                       size_t whylen)
{
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    const bson_t *doc;
    bson_t *out = NULL;
    bson_error_t error;
    *rc = 0;
    if (mongoc_cursor_next(cur, &doc))
        out = bson_copy(doc);
    else if (mongoc_cursor_error(cur, &error))
        *rc = rw_docs_error(&error, what, why, whylen);
    mongoc_cursor_destroy(cur);
    return out;
}

#endif
