/* Shared helpers for reelway's tests: the database the suite runs against and
 * unique names inside it. Tests include this after cmocka.h. */
#ifndef REELWAY_TEST_H
#define REELWAY_TEST_H

#include <stddef.h>

/**
 * The MongoDB URI the suite uses: $MONGODB_URI when set (a real MongoDB), else
 * the FerretDB started by the ctest fixture (its state file is named by
 * $RW_TEST_DB_STATE). Aborts the test with a message when neither exists.
 * Returns a static string.
 */
const char *rw_test_mongo_uri(void);

/**
 * Writes a database name unique to this process and call ("rwt_<prefix>_<pid>_<n>")
 * into buf, so tests never see each other's data, on FerretDB or MongoDB.
 */
void rw_test_db_name(char *buf, size_t len, const char *prefix);

/** Drops a database created by a test (best effort, for real MongoDB runs). */
void rw_test_drop_db(const char *uri, const char *db);

#endif
