/* reelway buckets: objects under S3-style keys ("reels/abc/720.webp") in a
 * directory, written atomically and durably, read without following links.
 * Part of libreelway_media.
 *
 * Layout
 * ------
 * A bucket is a directory D holding two trees on one filesystem:
 *   D/objects/KEY   the object's bytes, a plain file at the key's path;
 *   D/tmp/          uploads in progress (never reachable through a key).
 * A put writes D/tmp/<random>, fsyncs it, sets its metadata, renames it to
 * D/objects/KEY and fsyncs the directory: a reader sees the old object or the
 * new one, never a part, and once the put has finished the object survives a
 * crash. A put that fails (or a crash mid-put) leaves nothing under the key;
 * temporary files left by a crash are removed by rw_bucket_open a day later
 * (another process may still be writing a younger one).
 *
 * Metadata: one extended attribute ("user.reelway") on the object's file
 * ----------------------------------------------------------------------------
 * The size, the SHA-256 of the content (the strong ETag), the commit time,
 * the Content-Type, an optional Cache-Control and user metadata travel as one
 * small text attribute set on the temporary file before the rename. Why an
 * attribute and not a sidecar tree or an index:
 * - atomic: content and metadata appear together in the one rename; a sidecar
 *   file needs a second rename, and a reader between the two (or a crash)
 *   sees new bytes with old metadata;
 * - one open and one fgetxattr per request, on the fd that is then streamed:
 *   no second file, no database round trip, and no window in which the file
 *   read is not the one the metadata describes;
 * - the objects stay plain files (nginx, libvips, cp and rsync -X use them).
 * The cost: the filesystem must support user extended attributes (ext4, XFS,
 * btrfs, ZFS, overlayfs over those, tmpfs since Linux 6.6, NFS 4.2).
 * rw_bucket_open checks and refuses a filesystem without them; a backup must
 * keep them (tar --xattrs, rsync -X). An object whose attribute is missing or
 * does not match its size reads as RW_EPARSE, never with made-up metadata.
 *
 * Keys
 * ----
 * 1 to 1024 bytes of valid UTF-8; segments separated by '/', each 1 to 255
 * bytes, none "." or ".." (so no empty segment, no leading or trailing '/');
 * no NUL, no backslash, no ASCII control character. "a..b" is a legal name (it
 * is not a path component). Filesystem rules follow from the layout: a key
 * cannot also be the prefix "directory" of another key ("a" and "a/b"), which
 * S3 allows; such a put fails with UV_ENOTDIR or UV_EISDIR.
 *
 * No escape: every object is opened relative to D/objects with openat2(2) and
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS (Linux 5.6+),
 * else component by component with openat(O_NOFOLLOW | O_DIRECTORY), so a
 * symbolic link anywhere under D/objects is refused (UV_ELOOP) whatever it
 * points to, and non-regular files (directories, FIFOs, devices) are not
 * objects (RW_ENOTFOUND). The key checks come first; the kernel's resolution
 * rules are the second wall.
 *
 * Threads
 * -------
 * An rw_bucket_t is immutable once open and may be used from any thread. The
 * functions marked "blocking" do file I/O and must not run on a loop thread:
 * call them on the threadpool, at startup, or in a function's process. The
 * asynchronous ones (rw_bucket_get, the put stream) run their I/O on libuv's
 * threadpool and call back on the loop's thread.
 */
#ifndef REELWAY_BUCKET_H
#define REELWAY_BUCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "reelway/error.h"
#include "reelway/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rw_bucket_s rw_bucket_t;

#define RW_BUCKET_KEY_MAX 1024                   /**< bytes in a key, as S3 */
#define RW_BUCKET_SEGMENT_MAX 255                /**< bytes in a key segment (NAME_MAX) */
#define RW_BUCKET_TYPE_MAX 255                   /**< bytes in a Content-Type */
#define RW_BUCKET_CACHE_MAX 255                  /**< bytes in a Cache-Control */
#define RW_BUCKET_USER_MAX 2048                  /**< user metadata, names + values, as S3 */
#define RW_BUCKET_USER_COUNT 32                  /**< user metadata entries */
#define RW_BUCKET_NAME_MAX 64                    /**< bytes in a user metadata name */
#define RW_BUCKET_DEFAULT_MAX_BYTES (5ull << 30) /**< S3's single-put limit, 5 GiB */
#define RW_BUCKET_DEFAULT_TYPE "application/octet-stream"

/* ---- keys ------------------------------------------------------------------- */

/**
 * Checks key[0..len) against the key rules above (the bytes are the decoded
 * key: percent-decoding, if any, comes first). Returns 0 or UV_EINVAL, with a
 * static reason in *why when why is not NULL. Thread-safe, never blocks.
 */
int rw_bucket_key_check(const char *key, size_t len, const char **why);

/**
 * True when key[0..len) is content-addressed for an object whose SHA-256 is
 * sha256_hex (64 lowercase hex digits): the key contains that digest in
 * lowercase hex, as in "reels/abc/<sha256>.webp". Such a key can never name
 * other bytes while it keeps the name (new bytes have another digest), so its
 * object may be cached forever. Checked against the stored digest, so a key
 * that merely looks like a hash is not content-addressed.
 */
bool rw_bucket_key_content_addressed(const char *key, size_t len, const char *sha256_hex);

/* ---- opening ------------------------------------------------------------------ */

/** Options of rw_bucket_open; zero-initialise for the defaults. */
typedef struct rw_bucket_opts_s {
    /** Create the directory (with parents), objects/ and tmp/ when missing. */
    bool create;
    /**
     * Resolve keys component by component with openat(O_NOFOLLOW) even where
     * openat2 exists: the fallback path, for tests. (A kernel without openat2,
     * or a seccomp filter that refuses it, selects the fallback by itself.)
     */
    bool no_openat2;
} rw_bucket_opts_t;

/**
 * Opens the bucket in directory dir (whose own path may contain links: it is
 * the operator's; resolution rules apply beneath it). Checks that the
 * filesystem takes user extended attributes and removes temporary files
 * older than a day. Blocking. On failure writes the reason into why (if
 * given). Returns 0 and sets *out, or a negative error: UV_ENOENT (dir missing
 * and !create), UV_ENOTSUP (no extended attributes), UV_ENOMEM, others from
 * the filesystem.
 */
int rw_bucket_open(const char *dir, const rw_bucket_opts_t *opts, rw_bucket_t **out, char *why,
                   size_t whylen);

/** Closes the bucket's directories and frees it. Nothing may use it any more. Accepts NULL. */
void rw_bucket_free(rw_bucket_t *b);

/** The bucket's directory (absolute, resolved), valid while b is. */
const char *rw_bucket_dir(const rw_bucket_t *b);

/* ---- metadata ------------------------------------------------------------------ */

/**
 * An object's metadata, a plain value (copy it freely; no pointers inside).
 * The strong ETag is the quoted digest: "\"" sha256 "\"".
 */
typedef struct rw_bucket_meta_s {
    uint64_t size;                               /**< content bytes */
    char sha256[65];                             /**< SHA-256 of the content, lowercase hex */
    int64_t mtime;                               /**< commit time, seconds since the epoch */
    char content_type[RW_BUCKET_TYPE_MAX + 1];   /**< never empty */
    char cache_control[RW_BUCKET_CACHE_MAX + 1]; /**< "" when the put gave none */
    size_t n_user;                               /**< user metadata entries */
    /* private: "name\0value\0" n_user times */
    char user[RW_BUCKET_USER_MAX + 2 * RW_BUCKET_USER_COUNT];
} rw_bucket_meta_t;

/** A user metadata entry (put options). Both strings are the caller's. */
typedef struct rw_bucket_kv_s {
    const char *name;  /**< 1..64 of a-z 0-9 - _ (lower case, as S3 keeps them) */
    const char *value; /**< UTF-8 without CR, LF, NUL or other controls but HTAB */
} rw_bucket_kv_t;

/**
 * The i-th user metadata entry of m (i < m->n_user): sets *name and *value to
 * strings inside m. Returns false when i is out of range.
 */
bool rw_bucket_meta_user_at(const rw_bucket_meta_t *m, size_t i, const char **name,
                            const char **value);

/** The value of user metadata name in m (a string inside m), or NULL. */
const char *rw_bucket_meta_user(const rw_bucket_meta_t *m, const char *name);

/* ---- reading ------------------------------------------------------------------- */

/**
 * Opens the object at key for reading and reads its metadata. Blocking. On 0,
 * *fd is a read-only fd on the object (yours: close it) and *meta is filled;
 * the fd keeps reading the bytes *meta describes even if the key is
 * overwritten meanwhile. Errors: UV_EINVAL (invalid key), RW_ENOTFOUND (no
 * object: missing, a directory, not a regular file), UV_ELOOP (a symbolic link
 * on the key's path), RW_EPARSE (the file lacks valid metadata), others from
 * the filesystem.
 */
int rw_bucket_read_open(rw_bucket_t *b, const char *key, size_t len, uv_file *fd,
                        rw_bucket_meta_t *meta);

typedef struct rw_bucket_get_s rw_bucket_get_t;

/** Completion of rw_bucket_get, on the loop thread: status as rw_bucket_read_open. */
typedef void (*rw_bucket_get_cb)(rw_bucket_get_t *get, int status);

/**
 * An asynchronous rw_bucket_read_open (caller-allocated, like uv_fs_t; its
 * memory must stay valid until the callback).
 */
struct rw_bucket_get_s {
    void *data;            /**< yours */
    uv_file fd;            /**< after status 0: the object's fd, yours to close; else -1 */
    rw_bucket_meta_t meta; /**< after status 0 */
    /* private */
    uv_work_t work;
    rw_bucket_t *bucket;
    rw_bucket_get_cb cb;
    int status;
    size_t key_len;
    char key[RW_BUCKET_KEY_MAX + 1];
};

/**
 * Runs rw_bucket_read_open for key[0..len) (copied) on the threadpool; cb runs
 * on loop's thread. Returns 0, or UV_EINVAL for an invalid key or another
 * negative code, and then cb is never called.
 */
int rw_bucket_get(uv_loop_t *loop, rw_bucket_t *b, rw_bucket_get_t *get, const char *key,
                  size_t len, rw_bucket_get_cb cb);

/* ---- writing -------------------------------------------------------------------- */

/** Options of a put; zero-initialise for the defaults. Strings are copied at init. */
typedef struct rw_bucket_put_opts_s {
    const char *content_type;   /**< NULL: application/octet-stream; 1..255 header-safe bytes */
    const char *cache_control;  /**< NULL: none (the server picks); header-safe, <= 255 */
    const rw_bucket_kv_t *user; /**< user metadata (<= 32 entries, 2 KiB in all) */
    size_t n_user;
    uint64_t max_bytes; /**< content limit (RW_ELIMIT beyond); 0: RW_BUCKET_DEFAULT_MAX_BYTES */
} rw_bucket_put_opts_t;

/**
 * A put: a writable stream that stores what is written to it as the object
 * at key. Write the bytes (or pipe a body into it: nothing is buffered beyond
 * the writable's HWM and one file write), then end it. Internally the bytes go
 * through the stream library's SHA-256 pass-through into a file writable on
 * D/tmp, which fsyncs before it finishes.
 *
 * 'finish' on the put means committed: metadata set, fsynced, renamed into
 * place, directory fsynced; rw_bucket_put_meta then returns the metadata. An
 * error (RW_ELIMIT over max_bytes, the disk's, UV_ENOTDIR/UV_EISDIR for a key
 * that clashes with a directory, UV_ELOOP for a link on the key's path)
 * destroys the stream; a put destroyed or closed before it finished stores
 * nothing and leaves no file behind. Either way the previous object under the
 * key, if any, is untouched until the commit replaces it whole.
 *
 * Lifecycle as every adapter: init, use &put->stream, rw_stream_close it
 * exactly once; its close_cb runs after every internal stream is closed and
 * all threadpool work is over, and only then may the memory be reused.
 */
typedef struct rw_bucket_put_s {
    rw_stream_t stream; /**< the writable */
    /* private */
    rw_bucket_t *bucket;
    rw_sha256_t sha;
    rw_file_writable_t file;
    rw_pipeline_t pipeline;
    uv_work_t work;
    rw_bucket_meta_t meta;
    uint64_t max_bytes, written;
    int state, err, open_streams;
    bool started, drain_wait, final_wait, committed, ref_held;
    char tmp_name[80];
    size_t key_len;
    char key[RW_BUCKET_KEY_MAX + 1];
} rw_bucket_put_t;

/**
 * Initialises put for key[0..len) with opts (may be NULL). opts_stream may be
 * NULL (its writable_hwm bounds what the put buffers). Nothing touches the
 * disk until the first write or the end. Returns 0, UV_EINVAL (invalid key or
 * options), UV_ENOMEM.
 */
int rw_bucket_put_init(uv_loop_t *loop, rw_bucket_put_t *put, rw_bucket_t *b, const char *key,
                       size_t len, const rw_bucket_put_opts_t *opts,
                       const rw_stream_opts_t *opts_stream);

/** The committed object's metadata once the put has finished, else NULL. */
const rw_bucket_meta_t *rw_bucket_put_meta(const rw_bucket_put_t *put);

/* ---- removing -------------------------------------------------------------------- */

/**
 * Removes the object at key and fsyncs its directory. Blocking. Empty
 * directories left behind are kept (removing them would race with a put into
 * them). Returns 0, UV_EINVAL, RW_ENOTFOUND, UV_ELOOP or a filesystem error.
 */
int rw_bucket_remove(rw_bucket_t *b, const char *key, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* REELWAY_BUCKET_H */
