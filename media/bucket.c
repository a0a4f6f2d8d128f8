/* The filesystem bucket: key rules, resolution beneath the objects tree
 * without links (openat2, or openat component by component), metadata in one
 * extended attribute, and the blocking open / commit / remove steps. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/openat2.h>
#endif

#define TMP_MAX_AGE_S (24 * 3600)

/* ---- keys ------------------------------------------------------------------------- */

/* Length of the UTF-8 sequence at s (at most n bytes), or 0 when it is not a
 * valid, shortest-form scalar value (no surrogates, nothing past U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return need;
}

int rw_bucket_key_check(const char *key, size_t len, const char **why)
{
    const char *reason = NULL;
    const unsigned char *k = (const unsigned char *)key;
    if (key == NULL || len == 0) {
        reason = "the key is empty";
        goto out;
    }
    if (len > RW_BUCKET_KEY_MAX) {
        reason = "the key is longer than 1024 bytes";
        goto out;
    }
    size_t seg_start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || k[i] == '/') {
            size_t seg = i - seg_start;
            if (seg == 0)
                reason = i == 0     ? "the key starts with '/'"
                         : i == len ? "the key ends with '/'"
                                    : "the key has an empty segment ('//')";
            else if (seg == 1 && k[seg_start] == '.')
                reason = "the key has a '.' segment";
            else if (seg == 2 && k[seg_start] == '.' && k[seg_start + 1] == '.')
                reason = "the key has a '..' segment";
            else if (seg > RW_BUCKET_SEGMENT_MAX)
                reason = "a key segment is longer than 255 bytes";
            if (reason)
                goto out;
            seg_start = i + 1;
            continue;
        }
        if (k[i] == 0) {
            reason = "the key contains NUL";
        } else if (k[i] == '\\') {
            reason = "the key contains a backslash";
        } else if (k[i] < 0x20 || k[i] == 0x7f) {
            reason = "the key contains a control character";
        } else if (k[i] >= 0x80) {
            size_t n = utf8_seq(k + i, len - i);
            if (n == 0)
                reason = "the key is not valid UTF-8";
            else
                i += n - 1; /* continuation bytes are never '/' or NUL */
        }
        if (reason)
            goto out;
    }
out:
    if (why)
        *why = reason;
    return reason ? UV_EINVAL : 0;
}

bool rw_bucket_key_content_addressed(const char *key, size_t len, const char *sha256_hex)
{
    if (key == NULL || sha256_hex == NULL || strlen(sha256_hex) != 64 || len < 64)
        return false;
    for (size_t i = 0; i < 64; i++) {
        char c = sha256_hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    for (size_t i = 0; i + 64 <= len; i++)
        if (key[i] == sha256_hex[0] && memcmp(key + i, sha256_hex, 64) == 0)
            return true;
    return false;
}

/* ---- metadata ----------------------------------------------------------------------- */

bool rw__bucket_field_ok(const char *s, size_t n, bool allow_utf8)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t' || (c >= 0x20 && c < 0x7f))
            continue;
        if (c >= 0x80 && allow_utf8) {
            size_t k = utf8_seq((const unsigned char *)s + i, n - i);
            if (k == 0)
                return false;
            i += k - 1;
            continue;
        }
        return false;
    }
    return true;
}

bool rw_bucket_meta_user_at(const rw_bucket_meta_t *m, size_t i, const char **name,
                            const char **value)
{
    if (i >= m->n_user)
        return false;
    const char *p = m->user;
    for (size_t k = 0; k < i; k++) {
        p += strlen(p) + 1;
        p += strlen(p) + 1;
    }
    *name = p;
    *value = p + strlen(p) + 1;
    return true;
}

const char *rw_bucket_meta_user(const rw_bucket_meta_t *m, const char *name)
{
    const char *n, *v;
    for (size_t i = 0; rw_bucket_meta_user_at(m, i, &n, &v); i++)
        if (strcmp(n, name) == 0)
            return v;
    return NULL;
}

/* The attribute is text, one "name value" per line, so that `getfattr -d`
 * shows it as it is:
 *   reelway 1
 *   size 1234
 *   sha256 <64 hex>
 *   mtime 1700000000
 *   type image/webp
 *   cache public, max-age=60      (when given)
 *   user NAME VALUE               (per entry)
 * Values never hold CR, LF or NUL (checked when the put is set up). */
int rw__bucket_meta_encode(const rw_bucket_meta_t *m, char *buf, size_t cap)
{
    size_t n = 0;
    int w =
        snprintf(buf, cap, "reelway 1\nsize %" PRIu64 "\nsha256 %s\nmtime %" PRId64 "\ntype %s\n",
                 m->size, m->sha256, m->mtime, m->content_type);
    if (w < 0 || (size_t)w >= cap)
        return UV_E2BIG;
    n = (size_t)w;
    if (m->cache_control[0]) {
        w = snprintf(buf + n, cap - n, "cache %s\n", m->cache_control);
        if (w < 0 || (size_t)w >= cap - n)
            return UV_E2BIG;
        n += (size_t)w;
    }
    const char *un, *uv;
    for (size_t i = 0; rw_bucket_meta_user_at(m, i, &un, &uv); i++) {
        w = snprintf(buf + n, cap - n, "user %s %s\n", un, uv);
        if (w < 0 || (size_t)w >= cap - n)
            return UV_E2BIG;
        n += (size_t)w;
    }
    return (int)n;
}

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool copy_field(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap || !rw__bucket_field_ok(s, n, false))
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

int rw__bucket_meta_decode(const char *buf, size_t len, rw_bucket_meta_t *m)
{
    memset(m, 0, sizeof *m);
    bool have_size = false, have_sha = false, have_mtime = false, have_type = false;
    size_t user_used = 0;
    const char *p = buf, *end = buf + len;
    bool first = true;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            return RW_EPARSE; /* every line ends in LF */
        const char *sp = memchr(p, ' ', (size_t)(nl - p));
        if (sp == NULL)
            return RW_EPARSE;
        size_t kn = (size_t)(sp - p);
        const char *v = sp + 1;
        size_t vn = (size_t)(nl - v);
        if (first) {
            if (kn != 7 || memcmp(p, "reelway", 7) != 0 || vn != 1 || v[0] != '1')
                return RW_EPARSE;
            first = false;
        } else if (kn == 4 && memcmp(p, "size", 4) == 0) {
            have_size = parse_u64(v, vn, &m->size);
        } else if (kn == 6 && memcmp(p, "sha256", 6) == 0) {
            have_sha = vn == 64;
            for (size_t i = 0; have_sha && i < 64; i++)
                have_sha = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f');
            if (have_sha) {
                memcpy(m->sha256, v, 64);
                m->sha256[64] = '\0';
            }
        } else if (kn == 5 && memcmp(p, "mtime", 5) == 0) {
            uint64_t t = 0;
            have_mtime = parse_u64(v, vn, &t) && t <= INT64_MAX;
            m->mtime = (int64_t)t;
        } else if (kn == 4 && memcmp(p, "type", 4) == 0) {
            have_type = vn > 0 && copy_field(m->content_type, sizeof m->content_type, v, vn);
        } else if (kn == 5 && memcmp(p, "cache", 5) == 0) {
            if (!copy_field(m->cache_control, sizeof m->cache_control, v, vn))
                return RW_EPARSE;
        } else if (kn == 4 && memcmp(p, "user", 4) == 0) {
            const char *sp2 = memchr(v, ' ', vn);
            if (sp2 == NULL || m->n_user == RW_BUCKET_USER_COUNT)
                return RW_EPARSE;
            size_t nn = (size_t)(sp2 - v), uvn = vn - nn - 1;
            if (nn == 0 || user_used + nn + uvn + 2 > sizeof m->user ||
                !rw__bucket_field_ok(sp2 + 1, uvn, true))
                return RW_EPARSE;
            memcpy(m->user + user_used, v, nn);
            m->user[user_used + nn] = '\0';
            memcpy(m->user + user_used + nn + 1, sp2 + 1, uvn);
            m->user[user_used + nn + 1 + uvn] = '\0';
            user_used += nn + uvn + 2;
            m->n_user++;
        }
        /* Other names: written by a later version 1 writer; ignored. */
        p = nl + 1;
    }
    if (first || !have_size || !have_sha || !have_mtime || !have_type)
        return RW_EPARSE;
    return 0;
}

/* ---- resolution ------------------------------------------------------------------------ */

/* A key as a NUL-terminated path; the caller checked it (so no NUL inside). */
static int key_path(char *buf, const char *key, size_t len)
{
    if (rw_bucket_key_check(key, len, NULL) != 0)
        return UV_EINVAL;
    memcpy(buf, key, len);
    buf[len] = '\0';
    return 0;
}

/* openat(O_DIRECTORY | O_NOFOLLOW) on a symbolic link fails with ENOTDIR (the
 * directory check comes first); say ELOOP, as openat2 does, when it is one. */
static int link_or(int dirfd, const char *name, int err)
{
    struct stat st;
    if (err == -ENOTDIR && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(st.st_mode))
        return -ELOOP;
    return err;
}

/* Walks path (mutable, NUL-terminated, segments checked) from base one
 * component at a time. Intermediate components are opened with O_DIRECTORY |
 * O_NOFOLLOW, so neither a link nor anything but a directory is crossed.
 * Stops before the last component: returns an fd on its directory (base
 * itself is dup'ed, never returned) and sets *leaf. With create, missing
 * directories are made and their parents fsynced, so that an object renamed
 * into them later cannot vanish with its directory in a crash. */
static int walk_dirs(int base, char *path, bool create, char **leaf)
{
    int dir = base;
    char *seg = path;
    for (;;) {
        char *slash = strchr(seg, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
        int next = openat(dir, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(dir, seg, 0755) != 0 && errno != EEXIST) {
                int err = -errno;
                if (dir != base)
                    close(dir);
                return err;
            }
            if (fsync(dir) != 0) {
                int err = -errno;
                if (dir != base)
                    close(dir);
                return err;
            }
            next = openat(dir, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            int err = link_or(dir, seg, -errno);
            if (dir != base)
                close(dir);
            return err;
        }
        if (dir != base)
            close(dir);
        dir = next;
        seg = slash + 1;
    }
    *leaf = seg;
    if (dir == base) {
        dir = fcntl(base, F_DUPFD_CLOEXEC, 0);
        if (dir < 0)
            return -errno;
    }
    return dir;
}

static int open_walk(rw_bucket_t *b, char *path, int flags)
{
    char *leaf;
    int dir = walk_dirs(b->objects_fd, path, false, &leaf);
    if (dir < 0)
        return dir;
    int fd = openat(dir, leaf, flags | O_NOFOLLOW | O_CLOEXEC);
    int err = fd < 0 ? -errno : 0;
    close(dir);
    return fd < 0 ? err : fd;
}

#if defined(__linux__) && defined(SYS_openat2)
/* -1: not available; any other value: the result of the call (fd or -errno). */
static int try_openat2(rw_bucket_t *b, const char *path, int flags)
{
    if (b->no_openat2 || atomic_load(&b->have_openat2) < 0)
        return INT_MIN;
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    for (int attempt = 0;; attempt++) {
        long fd = syscall(SYS_openat2, b->objects_fd, path, &how, sizeof how);
        if (fd >= 0) {
            atomic_store(&b->have_openat2, 1);
            return (int)fd;
        }
        /* EAGAIN: a rename raced with a RESOLVE_BENEATH walk; the kernel
         * could not vouch for the result, so ask again. */
        if (errno == EAGAIN && attempt < 8)
            continue;
        /* ENOSYS: an old kernel; EPERM: a seccomp filter that does not know
         * the call (older container runtimes answer that). Neither changes
         * while we run: walk from now on. */
        if ((errno == ENOSYS || errno == EPERM) && atomic_load(&b->have_openat2) <= 0) {
            atomic_store(&b->have_openat2, -1);
            return INT_MIN;
        }
        return -errno;
    }
}
#else
static int try_openat2(rw_bucket_t *b, const char *path, int flags)
{
    return INT_MIN;
}
#endif

int rw__bucket_open_beneath(rw_bucket_t *b, const char *key, size_t len, int flags)
{
    char path[RW_BUCKET_KEY_MAX + 1];
    if (key_path(path, key, len) != 0)
        return UV_EINVAL;
    int fd = try_openat2(b, path, flags);
    if (fd != INT_MIN)
        return fd;
    return open_walk(b, path, flags);
}

int rw__bucket_open_parent(rw_bucket_t *b, const char *key, size_t len, bool create, size_t *leaf)
{
    char path[RW_BUCKET_KEY_MAX + 1];
    if (key_path(path, key, len) != 0)
        return UV_EINVAL;
    char *lp;
    int dir = walk_dirs(b->objects_fd, path, create, &lp);
    if (dir >= 0)
        *leaf = (size_t)(lp - path);
    return dir;
}

/* ---- reading ---------------------------------------------------------------------------- */

int rw_bucket_read_open(rw_bucket_t *b, const char *key, size_t len, uv_file *fd_out,
                        rw_bucket_meta_t *meta)
{
    *fd_out = -1;
    /* O_NONBLOCK: opening a FIFO someone planted must not hang the thread;
     * it is refused just below, and regular files ignore the flag. */
    int fd = rw__bucket_open_beneath(b, key, len, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return fd == -ENOENT || fd == -ENOTDIR ? RW_ENOTFOUND : fd;
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = RW_ENOTFOUND;
        goto out;
    }
    char buf[RW__BUCKET_META_ENCODED_MAX];
    ssize_t n = fgetxattr(fd, RW__BUCKET_XATTR, buf, sizeof buf);
    if (n < 0) {
        rc = errno == ENODATA || errno == ERANGE ? RW_EPARSE : -errno;
        goto out;
    }
    rc = rw__bucket_meta_decode(buf, (size_t)n, meta);
    /* The attribute describes the bytes committed with it: a file changed in
     * place since then is not that object any more. */
    if (rc == 0 && (uint64_t)st.st_size != meta->size)
        rc = RW_EPARSE;
out:
    if (rc != 0)
        close(fd);
    else
        *fd_out = fd;
    return rc;
}

static void get_work(uv_work_t *w)
{
    rw_bucket_get_t *g = w->data;
    g->status = rw_bucket_read_open(g->bucket, g->key, g->key_len, &g->fd, &g->meta);
}

static void get_after(uv_work_t *w, int status)
{
    rw_bucket_get_t *g = w->data;
    if (status != 0 && g->status == 0) {
        /* Cancelled before it ran: nothing was opened. */
        g->status = status;
        g->fd = -1;
    }
    g->cb(g, g->status);
}

int rw_bucket_get(uv_loop_t *loop, rw_bucket_t *b, rw_bucket_get_t *get, const char *key,
                  size_t len, rw_bucket_get_cb cb)
{
    if (cb == NULL || rw_bucket_key_check(key, len, NULL) != 0)
        return UV_EINVAL;
    memcpy(get->key, key, len);
    get->key[len] = '\0';
    get->key_len = len;
    get->bucket = b;
    get->cb = cb;
    get->fd = -1;
    get->status = 0;
    get->work.data = get;
    return uv_queue_work(loop, &get->work, get_work, get_after);
}

/* ---- committing and removing -------------------------------------------------------------- */

int rw__bucket_commit(rw_bucket_t *b, const char *tmp_name, const char *key, size_t len,
                      rw_bucket_meta_t *meta)
{
    int rc = 0, dir = -1;
    int fd = openat(b->tmp_fd, tmp_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != meta->size) {
        rc = RW_ETRUNC; /* not what went through the hash: never publish it */
        goto out;
    }
    meta->mtime = (int64_t)time(NULL);
    char buf[RW__BUCKET_META_ENCODED_MAX];
    int n = rw__bucket_meta_encode(meta, buf, sizeof buf);
    if (n < 0) {
        rc = n;
        goto out;
    }
    /* The data was fsynced by the file writable; this fsync makes the
     * attribute durable before the name points at the file. */
    if (fsetxattr(fd, RW__BUCKET_XATTR, buf, (size_t)n, 0) != 0 || fsync(fd) != 0) {
        rc = -errno;
        goto out;
    }
    size_t leaf;
    dir = rw__bucket_open_parent(b, key, len, true, &leaf);
    if (dir < 0) {
        rc = dir;
        goto out;
    }
    char name[RW_BUCKET_SEGMENT_MAX + 1];
    memcpy(name, key + leaf, len - leaf);
    name[len - leaf] = '\0';
    /* rename(2) replaces whatever the name held (an older object, or a link
     * someone planted: the link itself, never its target) in one step; a
     * directory of that name makes it fail with EISDIR. */
    if (renameat(b->tmp_fd, tmp_name, dir, name) != 0) {
        rc = -errno;
        goto out;
    }
    if (fsync(dir) != 0)
        rc = -errno; /* the object is in place; its durability is unknown */
out:
    if (fd >= 0)
        close(fd);
    if (dir >= 0)
        close(dir);
    if (rc != 0)
        unlinkat(b->tmp_fd, tmp_name, 0);
    return rc;
}

void rw__bucket_discard(rw_bucket_t *b, const char *tmp_name)
{
    unlinkat(b->tmp_fd, tmp_name, 0);
}

int rw_bucket_remove(rw_bucket_t *b, const char *key, size_t len)
{
    size_t leaf;
    int dir = rw__bucket_open_parent(b, key, len, false, &leaf);
    if (dir < 0)
        return dir == -ENOENT || dir == -ENOTDIR ? RW_ENOTFOUND : dir;
    char name[RW_BUCKET_SEGMENT_MAX + 1];
    memcpy(name, key + leaf, len - leaf);
    name[len - leaf] = '\0';
    int rc = 0;
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        rc = errno == ENOENT ? RW_ENOTFOUND : -errno;
    else if (S_ISLNK(st.st_mode))
        rc = UV_ELOOP;
    else if (!S_ISREG(st.st_mode))
        rc = RW_ENOTFOUND;
    else if (unlinkat(dir, name, 0) != 0)
        rc = errno == ENOENT ? RW_ENOTFOUND : -errno;
    else if (fsync(dir) != 0)
        rc = -errno;
    close(dir);
    return rc;
}

/* ---- opening ---------------------------------------------------------------------------- */

static void say(char *why, size_t whylen, const char *fmt, const char *a, int err)
{
    if (why && whylen) {
        char msg[256];
        snprintf(msg, sizeof msg, fmt, a);
        snprintf(why, whylen, "%s: %s", msg, rw_strerror(err));
    }
}

/* mkdir -p for the operator's path (links in it are the operator's). */
static int mkdir_parents(const char *dir)
{
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (p == NULL)
        return UV_ENOMEM;
    memcpy(p, dir, n + 1);
    int rc = 0;
    for (size_t i = 1; i <= n && rc == 0; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            rc = -errno;
        p[i] = c;
    }
    free(p);
    return rc;
}

static int open_subdir(int root, const char *name, bool create)
{
    if (create && mkdirat(root, name, 0755) != 0 && errno != EEXIST)
        return -errno;
    int fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Writes and reads back a metadata attribute on a scratch file in tmp/. A
 * read-only bucket cannot be probed; it still serves what it holds. */
static int probe_xattr(rw_bucket_t *b)
{
    char name[64];
    snprintf(name, sizeof name, "probe-%ld-%lld", (long)getpid(), (long long)time(NULL));
    int fd = openat(b->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EROFS || errno == EACCES ? 0 : -errno;
    int rc = 0;
    char back[8];
    if (fsetxattr(fd, RW__BUCKET_XATTR, "probe", 5, 0) != 0 ||
        fgetxattr(fd, RW__BUCKET_XATTR, back, sizeof back) != 5)
        rc = errno == EOPNOTSUPP || errno == ENOTSUP ? UV_ENOTSUP : -errno;
    close(fd);
    unlinkat(b->tmp_fd, name, 0);
    return rc;
}

/* Temporary files of puts that a crash interrupted (younger ones may belong
 * to another process's put in flight). */
static void sweep_tmp(rw_bucket_t *b)
{
    int fd = fcntl(b->tmp_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return;
    }
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        struct stat st;
        if (fstatat(b->tmp_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
            now - st.st_mtime > TMP_MAX_AGE_S)
            unlinkat(b->tmp_fd, e->d_name, 0);
    }
    closedir(d);
}

int rw_bucket_open(const char *dir, const rw_bucket_opts_t *opts, rw_bucket_t **out, char *why,
                   size_t whylen)
{
    *out = NULL;
    if (why && whylen)
        why[0] = '\0';
    bool create = opts && opts->create;
    if (dir == NULL || !*dir)
        return UV_EINVAL;
    rw_bucket_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return UV_ENOMEM;
    b->root_fd = b->objects_fd = b->tmp_fd = -1;
    b->no_openat2 = opts && opts->no_openat2;
    atomic_init(&b->have_openat2, 0);
    int rc = create ? mkdir_parents(dir) : 0;
    if (rc != 0) {
        say(why, whylen, "cannot create the bucket directory %s", dir, rc);
        goto fail;
    }
    b->root = realpath(dir, NULL);
    if (b->root == NULL) {
        rc = -errno;
        say(why, whylen, "bucket directory %s", dir, rc);
        goto fail;
    }
    b->root_fd = open(b->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b->root_fd < 0) {
        rc = -errno;
        say(why, whylen, "bucket directory %s", b->root, rc);
        goto fail;
    }
    if ((b->objects_fd = open_subdir(b->root_fd, "objects", create)) < 0) {
        rc = b->objects_fd;
        say(why, whylen, "bucket directory %s/objects", b->root, rc);
        goto fail;
    }
    if ((b->tmp_fd = open_subdir(b->root_fd, "tmp", create)) < 0) {
        rc = b->tmp_fd;
        say(why, whylen, "bucket directory %s/tmp", b->root, rc);
        goto fail;
    }
    if ((rc = probe_xattr(b)) != 0) {
        say(why, whylen,
            "bucket directory %s: the filesystem must keep user extended attributes "
            "(object metadata lives there)",
            b->root, rc);
        goto fail;
    }
    sweep_tmp(b);
    *out = b;
    return 0;
fail:
    rw_bucket_free(b);
    return rc;
}

void rw_bucket_free(rw_bucket_t *b)
{
    if (b == NULL)
        return;
    if (b->tmp_fd >= 0)
        close(b->tmp_fd);
    if (b->objects_fd >= 0)
        close(b->objects_fd);
    if (b->root_fd >= 0)
        close(b->root_fd);
    free(b->root);
    free(b);
}

const char *rw_bucket_dir(const rw_bucket_t *b)
{
    return b->root;
}
