/* The user pool's one adapter to mongo-c-driver: clients from the pool,
 * bson_error_t converted to reelway codes, the indexes, small readers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "reelway/error.h"
#include "userpool.h"

void up_db_open(up_db_t *db, up_app_t *app)
{
    db->app = app;
    db->client = mongoc_client_pool_pop(app->pool);
    db->error[0] = '\0';
}

void up_db_close(up_db_t *db)
{
    if (db->client != NULL)
        mongoc_client_pool_push(db->app->pool, db->client);
    db->client = NULL;
}

mongoc_collection_t *up_db_coll(up_db_t *db, const char *name)
{
    return mongoc_client_get_collection(db->client, db->app->cfg.database, name);
}

int up_db_error(up_db_t *db, const bson_error_t *error)
{
    snprintf(db->error, sizeof db->error, "%s", error->message);
    return error->code == 11000 ? -EEXIST : RW_EDB;
}

/* One index per createIndexes command: FerretDB 1.24 drops the connection on
 * a command listing several indexes when they already exist. */
static int create_index(up_db_t *db, const char *coll, const char *name, const bson_t *keys,
                        bool unique)
{
    bson_t cmd = BSON_INITIALIZER, indexes, index;
    bson_error_t error;
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &indexes);
    BSON_APPEND_DOCUMENT_BEGIN(&indexes, "0", &index);
    BSON_APPEND_DOCUMENT(&index, "key", keys);
    BSON_APPEND_UTF8(&index, "name", name);
    if (unique)
        BSON_APPEND_BOOL(&index, "unique", true);
    bson_append_document_end(&indexes, &index);
    bson_append_array_end(&cmd, &indexes);
    mongoc_database_t *database = mongoc_client_get_database(db->client, db->app->cfg.database);
    bool ok = mongoc_database_write_command_with_opts(database, &cmd, NULL, NULL, &error);
    mongoc_database_destroy(database);
    bson_destroy(&cmd);
    if (!ok) {
        snprintf(db->error, sizeof db->error, "index %s.%s: %s", coll, name, error.message);
        return RW_EDB;
    }
    return 0;
}

int up_db_ensure_indexes(up_db_t *db)
{
    if (db->app->indexes_ready)
        return 0;
    static const struct {
        const char *coll, *name, *field, *field2;
        bool unique;
    } specs[] = {
        /* Handles and emails are unique ignoring case: the lower-cased copies are. */
        {UP_COLL_USERS, "handle_lc_unique", "handle_lc", NULL, true},
        {UP_COLL_USERS, "email_lc_unique", "email_lc", NULL, true},
        /* A token has at most one successor: the insert of a second one fails,
         * which is how a reused refresh token is caught. */
        {UP_COLL_REFRESH, "parent_unique", "parent", NULL, true},
        {UP_COLL_REFRESH, "family", "family", NULL, false},
        /* One key per generation: concurrent rotations elect one. */
        {UP_COLL_KEYS, "generation_unique", "generation", NULL, true},
        {UP_COLL_KEYS, "publish_until", "publish_until", NULL, false},
        {UP_COLL_THROTTLE, "key_seq", "key", "seq", false},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        bson_t keys = BSON_INITIALIZER;
        BSON_APPEND_INT32(&keys, specs[i].field, 1);
        if (specs[i].field2)
            BSON_APPEND_INT32(&keys, specs[i].field2, -1);
        int rc = create_index(db, specs[i].coll, specs[i].name, &keys, specs[i].unique);
        bson_destroy(&keys);
        if (rc != 0)
            return rc;
    }
    db->app->indexes_ready = true;
    return 0;
}

int up_db_find_one(up_db_t *db, const char *coll, const bson_t *filter, const bson_t *opts,
                   bson_t **out)
{
    bson_t o = BSON_INITIALIZER;
    const bson_t *doc;
    bson_error_t error;
    int rc = 0;

    *out = NULL;
    if (opts != NULL)
        bson_copy_to_excluding_noinit(opts, &o, "limit", NULL);
    BSON_APPEND_INT64(&o, "limit", 1);
    mongoc_collection_t *c = up_db_coll(db, coll);
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(c, filter, &o, NULL);
    if (mongoc_cursor_next(cursor, &doc))
        *out = bson_copy(doc);
    if (mongoc_cursor_error(cursor, &error))
        rc = up_db_error(db, &error);
    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(c);
    bson_destroy(&o);
    if (rc != 0 && *out != NULL) {
        bson_destroy(*out);
        *out = NULL;
    }
    return rc;
}

const char *up_bson_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (doc && bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

int64_t up_bson_int(const bson_t *doc, const char *key, int64_t fallback)
{
    bson_iter_t it;
    if (doc && bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return fallback;
}

int64_t up_bson_date(const bson_t *doc, const char *key, int64_t fallback)
{
    bson_iter_t it;
    if (doc && bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return fallback;
}
