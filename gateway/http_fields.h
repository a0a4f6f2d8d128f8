/* Header fields collected from pieces, as llhttp hands a message's head over
 * (a name or value may arrive split across reads) or as a response is built
 * field by field. Names and values are kept NUL-terminated in one growing byte
 * store and located by offsets, since the store may move until the head is
 * complete; rw_fields_export then points headers into it. Private to the
 * gateway: the HTTP server (request heads and trailers), the HTTP client
 * (response heads and trailers) and the integration response mapper.
 *
 * Every function that grows returns 0 or UV_ENOMEM. */
#ifndef REELWAY_GATEWAY_HTTP_FIELDS_H
#define REELWAY_GATEWAY_HTTP_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reelway/http.h"

typedef struct rw_field_off_s {
    uint32_t name_off, name_len, value_off, value_len;
} rw_field_off_t;

typedef struct rw_fields_s {
    char *bytes;           /* names and values (and anything appended raw) */
    size_t len, cap;
    rw_field_off_t *at;    /* the fields, in arrival order */
    size_t n, cap_at;
    bool open;             /* a name is being received */
} rw_fields_t;

/* Appends raw bytes that belong to no field (a request target). */
int rw_fields_append(rw_fields_t *f, const char *s, size_t n);
/* Ends what was appended last with a NUL. */
int rw_fields_terminate(rw_fields_t *f);

/* True when the next rw_fields_name starts a new field (callers count and
 * limit fields there). */
static inline bool rw_fields_opening(const rw_fields_t *f) { return !f->open; }

/* Name bytes: the first piece opens a new field, later pieces extend it until
 * rw_fields_name_done. */
int rw_fields_name(rw_fields_t *f, const char *s, size_t n);
int rw_fields_name_done(rw_fields_t *f);
/* Value bytes of the last field (possibly none), ended by rw_fields_value_done. */
int rw_fields_value(rw_fields_t *f, const char *s, size_t n);
int rw_fields_value_done(rw_fields_t *f);

/* Fills out[0 .. to-from) with fields [from, to), pointing into f's bytes:
 * valid until f grows or is freed. */
void rw_fields_export(const rw_fields_t *f, size_t from, size_t to, rw_http_header_t *out);

/* Empties f for the next message, keeping its storage. */
static inline void rw_fields_reset(rw_fields_t *f)
{
    f->len = 0;
    f->n = 0;
    f->open = false;
}

void rw_fields_free(rw_fields_t *f);

#endif
