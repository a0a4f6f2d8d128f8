/* The local database: a FerretDB (SQLite backend) child process on a free
 * loopback port, used when MONGODB_URI is not set, and by the test fixture.
 * Private to the gateway (and the test harness). */
#ifndef REELWAY_GATEWAY_LOCALDB_H
#define REELWAY_GATEWAY_LOCALDB_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct rw_localdb_s {
    pid_t pid;              /**< FerretDB's pid, 0 when not running */
    int port;               /**< loopback port it listens on */
    char uri[128];          /**< mongodb://127.0.0.1:PORT/ */
    char dir[PATH_MAX];     /**< data directory (SQLite files, state, log) */
    char log_path[PATH_MAX]; /**< FerretDB's stdout+stderr */
} rw_localdb_t;

typedef struct rw_localdb_opts_s {
    const char *ferretdb;    /**< binary; NULL = rw_localdb_find_binary() */
    const char *dir;         /**< data directory, created if missing (required) */
    int start_timeout_ms;    /**< how long to wait for a ping answer (0 = 30000) */
    bool die_with_parent;    /**< ask the kernel to SIGTERM FerretDB if we die */
    bool new_session;        /**< detach it into its own session (test fixture) */
} rw_localdb_opts_t;

/**
 * Finds the FerretDB binary: $REELWAY_FERRETDB, then the path configured at
 * build time (.reelway/bin/ferretdb of the source tree), then `ferretdb` in
 * PATH. Returns a static string, or NULL when none is executable.
 */
const char *rw_localdb_find_binary(void);

/**
 * Starts FerretDB on a free 127.0.0.1 port with its data under opts->dir and
 * blocks until a mongo-c-driver `ping` answers. Retries on another port if the
 * chosen one was taken in between. On failure returns a negative RW_E* / UV_E*
 * code and writes a reason (including the tail of FerretDB's log) to err.
 * Blocking: call before the loop runs, never on the loop thread.
 */
int rw_localdb_start(rw_localdb_t *db, const rw_localdb_opts_t *opts, char *err, size_t errlen);

/**
 * Stops FerretDB: SIGTERM, waits up to timeout_ms, then SIGKILL. Works for a
 * child of this process and for a detached one (fixture). Safe to call twice.
 */
int rw_localdb_stop(rw_localdb_t *db, int timeout_ms);

/**
 * Registers db to be killed (SIGTERM, async-signal-safe) when the process exits
 * through exit() or dies of SIGSEGV/SIGABRT/SIGBUS/SIGFPE/SIGILL. Only one
 * database can be registered. Pass NULL to unregister.
 */
void rw_localdb_guard(rw_localdb_t *db);

/**
 * Sends a `ping` through mongo-c-driver. Returns 0, or RW_EDB with the reason in
 * err. Blocking for up to timeout_ms.
 */
int rw_db_ping(const char *uri, int timeout_ms, char *err, size_t errlen);

/** Returns a free TCP port on 127.0.0.1 (bound then released), or a negative code. */
int rw_free_port(void);

#endif
