/* reelway error codes, shared by every part.
 *
 * Functions that can fail return 0 or a negative error code. Codes in the errno
 * range are libuv's (UV_E*, negative errno on Unix) and mean what libuv says;
 * reelway's own codes start at RW_ERR_BASE and never collide with them.
 */
#ifndef REELWAY_ERROR_H
#define REELWAY_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#define RW_ERR_BASE (-5000)

/** reelway's own error codes (all negative). */
enum rw_error_e {
    RW_ELIMIT = RW_ERR_BASE - 1,    /**< a byte or item limit was exceeded */
    RW_ELINE = RW_ERR_BASE - 2,     /**< a line is longer than the allowed maximum */
    RW_ECHUNK = RW_ERR_BASE - 3,    /**< malformed HTTP chunked encoding */
    RW_ETRUNC = RW_ERR_BASE - 4,    /**< input ended before a complete message */
    RW_EPARSE = RW_ERR_BASE - 5,    /**< malformed input (JSON, YAML, headers, ...) */
    RW_EDB = RW_ERR_BASE - 6,       /**< the database failed or is unreachable */
    RW_EDESTROYED = RW_ERR_BASE - 7, /**< the stream was destroyed before it finished */
    RW_EWRITEEND = RW_ERR_BASE - 8, /**< write after end */
    RW_EPREMATURE = RW_ERR_BASE - 9, /**< the other side closed before the end */
    RW_EZLIB = RW_ERR_BASE - 10,    /**< zlib reported an error */
    RW_ECRYPTO = RW_ERR_BASE - 11,  /**< OpenSSL reported an error */
    RW_ECONFIG = RW_ERR_BASE - 12,  /**< invalid configuration */
    RW_ECHILD = RW_ERR_BASE - 13,   /**< a child process failed to start or died */
    RW_ETIMEOUT = RW_ERR_BASE - 14, /**< a deadline passed */
    RW_ENOTFOUND = RW_ERR_BASE - 15, /**< the named thing does not exist */
    RW_EMEDIA = RW_ERR_BASE - 16,   /**< media could not be decoded or encoded */
    RW_EAUTH = RW_ERR_BASE - 17,    /**< authentication failed (bad password, MAC tag, ...) */
    RW_ERR_LAST = RW_ERR_BASE - 18
};

/**
 * Returns a static, human-readable message for an error code: reelway's own
 * codes, libuv's, or any negative errno. Never returns NULL. Thread-safe.
 */
const char *rw_strerror(int err);

/**
 * Returns the symbolic name of an error code ("RW_ELIMIT", "ECONNRESET", ...).
 * Never returns NULL. Thread-safe.
 */
const char *rw_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* REELWAY_ERROR_H */
