/* Private to media/: the bucket's open directories and the blocking steps the
 * put stream runs on the threadpool. */
#ifndef REELWAY_MEDIA_INTERNAL_H
#define REELWAY_MEDIA_INTERNAL_H

#include "reelway/bucket.h"

#include <stdatomic.h>

/* The name of the extended attribute that holds an object's metadata. */
#define RW__BUCKET_XATTR "user.reelway"
/* Room for the encoded metadata: one filesystem block holds every attribute
 * of an inode on ext4, so stay well under 4 KiB. */
#define RW__BUCKET_META_ENCODED_MAX 3584

struct rw_bucket_s {
    char *root;              /* absolute, resolved */
    int root_fd;             /* D */
    int objects_fd;          /* D/objects: every key resolves beneath it */
    int tmp_fd;              /* D/tmp */
    bool no_openat2;         /* forced fallback (tests) */
    atomic_int have_openat2; /* 1 works, 0 unknown, -1 missing (ENOSYS) or filtered (EPERM) */
};

/** Encodes m as the attribute's text into buf; returns its length or UV_E2BIG. */
int rw__bucket_meta_encode(const rw_bucket_meta_t *m, char *buf, size_t cap);

/** Decodes an attribute's text; returns 0 or RW_EPARSE. */
int rw__bucket_meta_decode(const char *buf, size_t len, rw_bucket_meta_t *m);

/**
 * Opens the file at key beneath D/objects without following links (openat2 or
 * the component walk). flags are open(2) flags for the last component.
 * Returns an fd or a negative errno (ELOOP for a link on the path).
 */
int rw__bucket_open_beneath(rw_bucket_t *b, const char *key, size_t len, int flags);

/**
 * Opens the directory that holds key's last segment, walking from D/objects
 * with O_NOFOLLOW and creating (and fsyncing into their parents) the missing
 * directories when create. Sets *leaf to the offset of the last segment in
 * key. Returns a directory fd or a negative errno.
 */
int rw__bucket_open_parent(rw_bucket_t *b, const char *key, size_t len, bool create, size_t *leaf);

/**
 * Commits D/tmp/tmp_name as the object at key: checks its size against
 * meta->size, stamps meta->mtime, sets the attribute, fsyncs the file, renames
 * it into place and fsyncs the directory. Removes the temporary file on
 * failure. Blocking. Returns 0 or a negative error.
 */
int rw__bucket_commit(rw_bucket_t *b, const char *tmp_name, const char *key, size_t len,
                      rw_bucket_meta_t *meta);

/** Removes D/tmp/tmp_name if it exists (a failed put). Blocking. */
void rw__bucket_discard(rw_bucket_t *b, const char *tmp_name);

/** True when s[0..n) is a header-safe field value (visible ASCII, SP, HTAB). */
bool rw__bucket_field_ok(const char *s, size_t n, bool allow_utf8);

#endif
