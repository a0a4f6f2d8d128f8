/* The user pool's configuration, read once from the environment at init, and
 * the master key that seals signing keys at rest. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "reelway/error.h"
#include "userpool.h"

/* Master keys shorter than this are refused: the value is used as HKDF input
 * without stretching, so it must be random, not a passphrase. */
#define MASTER_KEY_MIN_CHARS 32

static char *env_dup(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        v = fallback;
    return v ? strdup(v) : NULL;
}

/* An integer variable within [min, max]; fallback when unset. */
static int env_int64(const char *name, int64_t fallback, int64_t min, int64_t max, int64_t *out,
                     char *why, size_t whylen)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        *out = fallback;
        return 0;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        snprintf(why, whylen, "%s=%s: expected an integer from %lld to %lld", name, v,
                 (long long)min, (long long)max);
        return RW_ECONFIG;
    }
    *out = n;
    return 0;
}

int up_config_load(up_config_t *cfg, char *why, size_t whylen)
{
    static const struct {
        const char *name;
        size_t offset;
    } required[] = {
        {"MONGODB_URI", offsetof(up_config_t, mongodb_uri)},
        {"DATABASE_NAME", offsetof(up_config_t, database)},
        {"TOKEN_ISSUER", offsetof(up_config_t, issuer)},
        {"TOKEN_AUDIENCE", offsetof(up_config_t, audience)},
    };
    int64_t n;
    int rc;

    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        char **slot = (char **)((char *)cfg + required[i].offset);
        *slot = env_dup(required[i].name, NULL);
        if (*slot == NULL) {
            snprintf(why, whylen, "%s is not set", required[i].name);
            return RW_ECONFIG;
        }
    }
    cfg->scopes = env_dup("TOKEN_SCOPES", "openid profile email");
    /* Endpoints hang off the gateway's public URL; a trailing slash would
     * double in the URLs built from it. */
    cfg->base_url = env_dup("PUBLIC_URL", cfg->issuer);
    size_t bl = cfg->base_url ? strlen(cfg->base_url) : 0;
    while (bl > 0 && cfg->base_url[bl - 1] == '/')
        cfg->base_url[--bl] = '\0';
    const char *jwks = getenv("USERPOOL_JWKS_URI");
    if (jwks && *jwks) {
        cfg->jwks_uri = strdup(jwks);
    } else if (cfg->base_url) {
        size_t len = bl + sizeof "/.well-known/jwks.json";
        cfg->jwks_uri = malloc(len);
        if (cfg->jwks_uri)
            snprintf(cfg->jwks_uri, len, "%s/.well-known/jwks.json", cfg->base_url);
    }
    if (!cfg->scopes || !cfg->base_url || !cfg->jwks_uri) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }

    const char *alg = getenv("USERPOOL_SIGNING_ALG");
    if (alg == NULL || *alg == '\0' || strcmp(alg, "RS256") == 0) {
        cfg->key_kind = RW_JWK_RSA2048;
    } else if (strcmp(alg, "ES256") == 0) {
        cfg->key_kind = RW_JWK_EC_P256;
    } else {
        snprintf(why, whylen, "USERPOOL_SIGNING_ALG=%s: expected RS256 or ES256", alg);
        return RW_ECONFIG;
    }

    const char *mode = getenv("USERPOOL_MODE");
    if (mode == NULL || *mode == '\0' || strcmp(mode, "production") == 0) {
        cfg->production = true;
    } else if (strcmp(mode, "development") == 0) {
        cfg->production = false;
    } else {
        snprintf(why, whylen, "USERPOOL_MODE=%s: expected production or development", mode);
        return RW_ECONFIG;
    }
    cfg->dev_key_file = env_dup("USERPOOL_DEV_KEY_FILE", ".reelway-userpool-dev.key");

    /* Rotation ages under a few minutes only make sense in tests: every key
     * stays published for an hour past its signing period. */
    if ((rc = env_int64("USERPOOL_KEY_ROTATION_S", 30LL * 86400, 1, 3650LL * 86400,
                        &cfg->key_rotation_s, why, whylen)) ||
        (rc = env_int64("REFRESH_TOKEN_TTL_S", 30LL * 86400, 60, 3650LL * 86400,
                        &cfg->refresh_ttl_s, why, whylen)) ||
        (rc = env_int64("LOGIN_DELAY_BASE_MS", 1000, 1, 3600 * 1000, &cfg->login_delay_base_ms, why,
                        whylen)) ||
        (rc = env_int64("LOGIN_DELAY_MAX_MS", 60 * 1000, 1, 24LL * 3600 * 1000,
                        &cfg->login_delay_max_ms, why, whylen)) ||
        (rc = env_int64("LOGIN_LOCK_S", 900, 1, 30LL * 86400, &cfg->login_lock_s, why, whylen)))
        return rc;
    if ((rc = env_int64("LOGIN_SLOW_AFTER", 3, 1, 1000, &n, why, whylen)))
        return rc;
    cfg->login_slow_after = (int)n;
    if ((rc = env_int64("LOGIN_LOCK_AFTER", 10, 1, 1000, &n, why, whylen)))
        return rc;
    cfg->login_lock_after = (int)n;
    if (cfg->login_lock_after < cfg->login_slow_after) {
        snprintf(why, whylen, "LOGIN_LOCK_AFTER (%d) must not be below LOGIN_SLOW_AFTER (%d)",
                 cfg->login_lock_after, cfg->login_slow_after);
        return RW_ECONFIG;
    }
    if ((rc = env_int64("USERPOOL_ARGON2_OPSLIMIT", 0, 0, 64, &n, why, whylen)))
        return rc;
    cfg->argon2.opslimit = (unsigned long long)n;
    if ((rc = env_int64("USERPOOL_ARGON2_MEMLIMIT_MIB", 0, 0, 4096, &n, why, whylen)))
        return rc;
    cfg->argon2.memlimit = (size_t)n << 20;
    return 0;
}

void up_config_free(up_config_t *cfg)
{
    free(cfg->mongodb_uri);
    free(cfg->database);
    free(cfg->issuer);
    free(cfg->audience);
    free(cfg->scopes);
    free(cfg->base_url);
    free(cfg->jwks_uri);
    free(cfg->dev_key_file);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- master key --------------------------------------------------------------------- */

/* Reads the development key file: one line of at least MASTER_KEY_MIN_CHARS. */
static int read_key_file(const char *path, char *buf, size_t cap, char *why, size_t whylen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, cap - 1);
    int err = errno;
    close(fd);
    if (n < 0)
        return -err;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (strlen(buf) < MASTER_KEY_MIN_CHARS) {
        snprintf(why, whylen, "%s does not hold a master key (at least %d characters)", path,
                 MASTER_KEY_MIN_CHARS);
        return RW_ECONFIG;
    }
    return 0;
}

/* Creates the development key file once: written to a private temporary file,
 * then link()ed into place, which fails if another environment got there
 * first (its key is then the one everyone uses). */
static int create_key_file(const char *path, char *why, size_t whylen)
{
    char token[RW_TOKEN_LEN + 1];
    char tmp[4200];
    int rc;

    if ((rc = rw_token_generate(token)) != 0) {
        snprintf(why, whylen, "cannot generate a development master key: %s", rw_strerror(rc));
        return rc;
    }
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    unlink(tmp); /* left by a process that died here with our pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, whylen, "cannot create %s: %s", tmp, strerror(errno));
        return -errno;
    }
    char line[RW_TOKEN_LEN + 2];
    int len = snprintf(line, sizeof line, "%s\n", token);
    bool ok = write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    OPENSSL_cleanse(token, sizeof token);
    OPENSSL_cleanse(line, sizeof line);
    if (!ok) {
        snprintf(why, whylen, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return RW_ECONFIG;
    }
    rc = link(tmp, path) == 0 || errno == EEXIST ? 0 : -errno;
    if (rc != 0)
        snprintf(why, whylen, "cannot create %s: %s", path, strerror(-rc));
    unlink(tmp);
    return rc;
}

/* A short fingerprint of the master key, stored beside every sealed key. It
 * says "sealed under another master key" before a failed unseal does, and
 * reveals nothing about the key (a hash of a domain-separated copy). */
static int master_key_id(const rw_masterkey_t *mk, char id[17])
{
    static const char domain[] = "reelway userpool master key id v1";
    uint8_t buf[sizeof domain + sizeof mk->bytes];
    char hex[RW_TOKEN_HASH_LEN + 1];
    memcpy(buf, domain, sizeof domain);
    memcpy(buf + sizeof domain, mk->bytes, sizeof mk->bytes);
    int rc = rw_token_hash((const char *)buf, sizeof buf, hex);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc != 0)
        return rc;
    memcpy(id, hex, 16);
    id[16] = '\0';
    return 0;
}

int up_master_key_load(const up_config_t *cfg, rw_masterkey_t *mk, char id[17], bool *dev_file_used,
                       char *why, size_t whylen)
{
    char secret[512];
    int rc;

    *dev_file_used = false;
    const char *env = getenv("USERPOOL_MASTER_KEY");
    if (env && *env) {
        if (strlen(env) < MASTER_KEY_MIN_CHARS || strlen(env) >= sizeof secret) {
            snprintf(why, whylen,
                     "USERPOOL_MASTER_KEY must hold %d to %zu characters of random data "
                     "(e.g. `openssl rand -base64 32`)",
                     MASTER_KEY_MIN_CHARS, sizeof secret - 1);
            return RW_ECONFIG;
        }
        snprintf(secret, sizeof secret, "%s", env);
    } else if (cfg->production) {
        snprintf(why, whylen,
                 "USERPOOL_MASTER_KEY is not set: in production the signing keys must be "
                 "sealed under a master key from the environment (`openssl rand -base64 32`); "
                 "for local development set USERPOOL_MODE=development instead");
        return RW_ECONFIG;
    } else {
        rc = read_key_file(cfg->dev_key_file, secret, sizeof secret, why, whylen);
        if (rc == -ENOENT) {
            if ((rc = create_key_file(cfg->dev_key_file, why, whylen)) != 0)
                return rc;
            rc = read_key_file(cfg->dev_key_file, secret, sizeof secret, why, whylen);
        }
        if (rc != 0) {
            if (rc != RW_ECONFIG)
                snprintf(why, whylen, "cannot read %s: %s", cfg->dev_key_file, rw_strerror(rc));
            return rc;
        }
        *dev_file_used = true;
    }
    rc = rw_masterkey_derive(mk, secret, strlen(secret));
    OPENSSL_cleanse(secret, sizeof secret);
    if (rc == 0)
        rc = master_key_id(mk, id);
    if (rc != 0) {
        snprintf(why, whylen, "cannot derive the master key: %s", rw_strerror(rc));
        rw_masterkey_wipe(mk);
    }
    return rc;
}
