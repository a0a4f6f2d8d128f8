/* Small helpers over MongoDB documents that the gateway's stores share (the
 * queue, the scheduler): typed reads with a default, and the write concern
 * every durable write carries. Private to the gateway. */
#ifndef REELWAY_GATEWAY_DOCS_H
#define REELWAY_GATEWAY_DOCS_H

#include <mongoc/mongoc.h>
#include <stdint.h>

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

#endif
