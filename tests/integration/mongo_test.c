/* The database reelway stands on, through mongo-c-driver: what every other part
 * relies on must work on FerretDB (the local default) and on a real MongoDB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <mongoc/mongoc.h>
#include <stdlib.h>
#include <string.h>

#include "rw_test.h"

typedef struct {
    mongoc_client_t *client;
    mongoc_database_t *db;
    char name[96];
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    const char *uri = rw_test_mongo_uri();
    fx->client = mongoc_client_new(uri);
    if (!fx->client)
        return -1;
    mongoc_client_set_error_api(fx->client, MONGOC_ERROR_API_VERSION_2);
    rw_test_db_name(fx->name, sizeof fx->name, "mongo");
    fx->db = mongoc_client_get_database(fx->client, fx->name);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    bson_error_t error;
    mongoc_database_drop(fx->db, &error);
    mongoc_database_destroy(fx->db);
    mongoc_client_destroy(fx->client);
    free(fx);
    return 0;
}

static void insert_then_find_sorted_and_limited(void **state)
{
    fixture_t *fx = *state;
    mongoc_collection_t *coll = mongoc_database_get_collection(fx->db, "reels");
    bson_error_t error;
    for (int i = 0; i < 10; i++) {
        bson_t *doc = BCON_NEW("n", BCON_INT32((i * 7) % 10), "title", BCON_UTF8("reel"));
        assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
        bson_destroy(doc);
    }
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "n", BCON_INT32(-1), "}", "limit", BCON_INT64(3));
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    int expected[] = {9, 8, 7}, got = 0;
    while (mongoc_cursor_next(cursor, &doc)) {
        bson_iter_t it;
        assert_true(bson_iter_init_find(&it, doc, "n"));
        assert_int_equal(bson_iter_int32(&it), expected[got]);
        got++;
    }
    assert_false(mongoc_cursor_error(cursor, &error));
    assert_int_equal(got, 3);
    mongoc_cursor_destroy(cursor);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
}

static void cursor_fetches_more_batches(void **state)
{
    fixture_t *fx = *state;
    mongoc_collection_t *coll = mongoc_database_get_collection(fx->db, "many");
    bson_error_t error;
    enum { N = 250 };
    bson_t *docs[N];
    for (int i = 0; i < N; i++)
        docs[i] = BCON_NEW("i", BCON_INT32(i));
    assert_true(mongoc_collection_insert_many(coll, (const bson_t **)docs, N, NULL, NULL, &error));
    for (int i = 0; i < N; i++)
        bson_destroy(docs[i]);

    /* A batch size of 10 makes the driver issue getMore 24 times. */
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "i", BCON_INT32(1), "}", "batchSize", BCON_INT32(10));
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    int seen = 0;
    int64_t first_cursor_id = -1;
    while (mongoc_cursor_next(cursor, &doc)) {
        bson_iter_t it;
        assert_true(bson_iter_init_find(&it, doc, "i"));
        assert_int_equal(bson_iter_int32(&it), seen);
        if (seen == 0)
            first_cursor_id = mongoc_cursor_get_id(cursor);
        seen++;
    }
    assert_false(mongoc_cursor_error(cursor, &error));
    assert_int_equal(seen, N);
    /* A live server-side cursor existed after the first batch: getMore was used. */
    assert_true(first_cursor_id > 0);
    mongoc_cursor_destroy(cursor);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
}

static void unique_index_rejects_duplicate_with_11000(void **state)
{
    fixture_t *fx = *state;
    mongoc_collection_t *coll = mongoc_database_get_collection(fx->db, "users");
    bson_error_t error;
    bson_t *cmd = BCON_NEW("createIndexes", BCON_UTF8("users"), "indexes", "[", "{", "key", "{",
                           "handle", BCON_INT32(1), "}", "name", BCON_UTF8("handle_1"), "unique",
                           BCON_BOOL(true), "}", "]");
    assert_true(mongoc_database_write_command_with_opts(fx->db, cmd, NULL, NULL, &error));
    bson_destroy(cmd);

    bson_t *doc = BCON_NEW("handle", BCON_UTF8("ada"));
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_t reply;
    assert_false(mongoc_collection_insert_one(coll, doc, NULL, &reply, &error));
    assert_int_equal(error.code, 11000);
    bson_destroy(&reply);
    bson_destroy(doc);
    mongoc_collection_destroy(coll);
}

static void find_and_modify_returns_new_document(void **state)
{
    fixture_t *fx = *state;
    mongoc_collection_t *coll = mongoc_database_get_collection(fx->db, "queue");
    bson_error_t error;
    bson_t *doc = BCON_NEW("_id", BCON_UTF8("m1"), "state", BCON_UTF8("ready"), "tries",
                           BCON_INT32(0));
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);

    bson_t *query = BCON_NEW("state", BCON_UTF8("ready"));
    bson_t *update = BCON_NEW("$set", "{", "state", BCON_UTF8("claimed"), "}", "$inc", "{",
                              "tries", BCON_INT32(1), "}");
    mongoc_find_and_modify_opts_t *opts = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(opts, update);
    mongoc_find_and_modify_opts_set_flags(opts, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    bson_t reply;
    assert_true(mongoc_collection_find_and_modify_with_opts(coll, query, opts, &reply, &error));
    bson_iter_t it, value;
    assert_true(bson_iter_init_find(&it, &reply, "value"));
    assert_true(BSON_ITER_HOLDS_DOCUMENT(&it));
    assert_true(bson_iter_recurse(&it, &value));
    assert_true(bson_iter_find(&value, "state"));
    assert_string_equal(bson_iter_utf8(&value, NULL), "claimed");
    bson_destroy(&reply);

    /* Nothing is left in state "ready": a second claim gets a null value. */
    assert_true(mongoc_collection_find_and_modify_with_opts(coll, query, opts, &reply, &error));
    assert_true(bson_iter_init_find(&it, &reply, "value"));
    assert_true(BSON_ITER_HOLDS_NULL(&it));
    bson_destroy(&reply);
    mongoc_find_and_modify_opts_destroy(opts);
    bson_destroy(update);
    bson_destroy(query);
    mongoc_collection_destroy(coll);
}

static void gridfs_round_trip_3mb(void **state)
{
    fixture_t *fx = *state;
    bson_error_t error;
    mongoc_gridfs_bucket_t *bucket = mongoc_gridfs_bucket_new(fx->db, NULL, NULL, &error);
    assert_non_null(bucket);

    enum { SIZE = 3 * 1024 * 1024 + 12345 };
    uint8_t *data = malloc(SIZE);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < SIZE; i++) { /* xorshift: incompressible, reproducible */
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        data[i] = (uint8_t)x;
    }
    mongoc_stream_t *up = mongoc_gridfs_bucket_open_upload_stream(bucket, "clip.bin", NULL, NULL,
                                                                  &error);
    assert_non_null(up);
    /* Write in odd-sized pieces so chunk boundaries fall mid-write. */
    for (size_t off = 0; off < SIZE;) {
        size_t n = SIZE - off < 100003 ? SIZE - off : 100003;
        assert_int_equal(mongoc_stream_write(up, data + off, n, 0), (ssize_t)n);
        off += n;
    }
    bson_value_t file_id;
    assert_true(mongoc_gridfs_bucket_stream_error(up, &error) == false);
    mongoc_stream_close(up);
    mongoc_stream_destroy(up);

    /* Find the file back by name and read it. */
    bson_t *filter = BCON_NEW("filename", BCON_UTF8("clip.bin"));
    mongoc_cursor_t *cursor = mongoc_gridfs_bucket_find(bucket, filter, NULL);
    const bson_t *file;
    assert_true(mongoc_cursor_next(cursor, &file));
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, file, "_id"));
    bson_value_copy(bson_iter_value(&it), &file_id);
    assert_true(bson_iter_init_find(&it, file, "length"));
    assert_int_equal(bson_iter_as_int64(&it), SIZE);
    mongoc_cursor_destroy(cursor);
    bson_destroy(filter);

    mongoc_stream_t *down = mongoc_gridfs_bucket_open_download_stream(bucket, &file_id, &error);
    assert_non_null(down);
    uint8_t *back = malloc(SIZE + 1);
    size_t got = 0;
    for (;;) {
        ssize_t n = mongoc_stream_read(down, back + got, SIZE + 1 - got, 1, 0);
        assert_true(n >= 0);
        if (n == 0)
            break;
        got += (size_t)n;
    }
    assert_int_equal(got, SIZE);
    assert_memory_equal(back, data, SIZE);
    mongoc_stream_destroy(down);
    bson_value_destroy(&file_id);
    free(back);
    free(data);
    mongoc_gridfs_bucket_destroy(bucket);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(insert_then_find_sorted_and_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(cursor_fetches_more_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(unique_index_rejects_duplicate_with_11000, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(find_and_modify_returns_new_document, setup, teardown),
        cmocka_unit_test_setup_teardown(gridfs_round_trip_3mb, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return failed;
}
