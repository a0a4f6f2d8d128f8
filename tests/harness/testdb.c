/* ctest fixture: `rw_testdb start STATE` starts a FerretDB for the whole suite on
 * a free loopback port in a fresh temporary directory (or records $MONGODB_URI
 * when set); `rw_testdb stop STATE` stops it and removes the directory. */
#include "localdb.h"
#include "reelway/error.h"

#include <ftw.h>
#include <stdbool.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int stop(const char *state);

static int start(const char *state)
{
    const char *env = getenv("MONGODB_URI");
    FILE *f;
    /* A state file left here names the database of a run that was interrupted
     * or is repeated (ctest --repeat starts the fixture again before it stops
     * it): that database is stopped first, not left behind. */
    if (access(state, F_OK) == 0 && stop(state) != 0)
        return 1;
    if (env && *env) {
        char why[256];
        if (rw_db_ping(env, 10000, why, sizeof why) != 0) {
            fprintf(stderr, "MONGODB_URI does not answer ping: %s\n", why);
            return 1;
        }
        f = fopen(state, "w");
        if (!f)
            return perror(state), 1;
        fprintf(f, "external\n%s\n-\n", env);
        fclose(f);
        printf("using MONGODB_URI\n");
        return 0;
    }
    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/rw-testdb-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return perror("mkdtemp"), 1;
    rw_localdb_t db;
    rw_localdb_opts_t opts = {.dir = dir, .new_session = true};
    char err[1024];
    int rc = rw_localdb_start(&db, &opts, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "cannot start FerretDB: %s\n", err);
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 1;
    }
    f = fopen(state, "w");
    if (!f) {
        perror(state);
        rw_localdb_stop(&db, 5000);
        return 1;
    }
    fprintf(f, "%d\n%s\n%s\n", (int)db.pid, db.uri, db.dir);
    fclose(f);
    printf("FerretDB pid %d at %s, data in %s\n", (int)db.pid, db.uri, db.dir);
    return 0;
}

/* True when pid is a FerretDB serving from dir (a pid read from an old state
 * file may since belong to another process). */
static bool is_our_ferretdb(pid_t pid, const char *dir)
{
    char path[64], cmd[8192];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (cmd[i] == '\0')
            cmd[i] = ' ';
    cmd[n] = '\0';
    return strstr(cmd, "ferretdb") && dir[0] && strstr(cmd, dir);
}

static int stop(const char *state)
{
    FILE *f = fopen(state, "r");
    if (!f) {
        printf("no state file %s: nothing to stop\n", state);
        return 0;
    }
    char pid[64] = "", uri[512] = "", dir[PATH_MAX] = "";
    if (!fgets(pid, sizeof pid, f) || !fgets(uri, sizeof uri, f) || !fgets(dir, sizeof dir, f)) {
        fclose(f);
        fprintf(stderr, "malformed state file %s\n", state);
        return 1;
    }
    fclose(f);
    dir[strcspn(dir, "\n")] = '\0';
    int status = 0;
    if (strncmp(pid, "external", 8) != 0) {
        rw_localdb_t db = {.pid = (pid_t)atoi(pid)};
        if (!is_our_ferretdb(db.pid, dir))
            printf("FerretDB pid %d is no longer running\n", (int)db.pid);
        else if (rw_localdb_stop(&db, 10000) != 0) {
            fprintf(stderr, "FerretDB pid %s did not stop on SIGTERM (killed)\n", pid);
            status = 1;
        }
        if (dir[0] == '/')
            nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    unlink(state);
    return status;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "start") && strcmp(argv[1], "stop"))) {
        fprintf(stderr, "usage: rw_testdb start|stop STATEFILE\n");
        return 2;
    }
    mongoc_init();
    int rc = strcmp(argv[1], "start") == 0 ? start(argv[2]) : stop(argv[2]);
    mongoc_cleanup();
    return rc;
}
