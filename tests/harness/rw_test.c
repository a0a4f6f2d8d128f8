/* Helpers shared by the tests: which database to use, unique names. */
#include "rw_test.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char mongo_uri[512];

static void read_mongo_uri(void)
{
    const char *state = getenv("RW_TEST_DB_STATE");
    FILE *f = state ? fopen(state, "r") : NULL;
    if (!f) {
        fprintf(stderr, "no database: set MONGODB_URI or run through ctest (the db fixture "
                        "writes RW_TEST_DB_STATE=%s)\n", state ? state : "(unset)");
        exit(1);
    }
    /* State file: line 1 = pid (or "external"), line 2 = uri, line 3 = dir. */
    char pid[64];
    if (!fgets(pid, sizeof pid, f) || !fgets(mongo_uri, sizeof mongo_uri, f)) {
        fclose(f);
        fprintf(stderr, "malformed database state file %s\n", state);
        exit(1);
    }
    fclose(f);
    mongo_uri[strcspn(mongo_uri, "\r\n")] = '\0';
}

/* Read once: callers keep the pointer and use it from several threads (a
 * second read rewrote the buffer under a thread connecting with it). */
const char *rw_test_mongo_uri(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const char *env = getenv("MONGODB_URI");
    if (env && *env)
        return env;
    pthread_once(&once, read_mongo_uri);
    return mongo_uri;
}

void rw_test_db_name(char *buf, size_t len, const char *prefix)
{
    static unsigned counter;
    snprintf(buf, len, "rwt_%s_%d_%u", prefix, (int)getpid(), counter++);
}

void rw_test_drop_db(const char *uri_string, const char *name)
{
    mongoc_client_t *client = mongoc_client_new(uri_string);
    if (!client)
        return;
    mongoc_database_t *db = mongoc_client_get_database(client, name);
    bson_error_t error;
    mongoc_database_drop(db, &error);
    mongoc_database_destroy(db);
    mongoc_client_destroy(client);
}
