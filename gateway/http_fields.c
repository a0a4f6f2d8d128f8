/* Header fields collected from pieces: see http_fields.h. */
#include "http_fields.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BYTES_INITIAL 1024
#define FIELDS_INITIAL 16

static int reserve(rw_fields_t *f, size_t n)
{
    if (f->len + n <= f->cap)
        return 0;
    size_t cap = f->cap ? f->cap : BYTES_INITIAL;
    while (cap < f->len + n)
        cap *= 2;
    char *p = realloc(f->bytes, cap);
    if (!p)
        return UV_ENOMEM;
    f->bytes = p;
    f->cap = cap;
    return 0;
}

int rw_fields_append(rw_fields_t *f, const char *s, size_t n)
{
    /* One byte more is always kept for the NUL that ends the piece. */
    if (reserve(f, n + 1) != 0)
        return UV_ENOMEM;
    if (n)
        memcpy(f->bytes + f->len, s, n);
    f->len += n;
    return 0;
}

int rw_fields_terminate(rw_fields_t *f)
{
    if (reserve(f, 1) != 0)
        return UV_ENOMEM;
    f->bytes[f->len++] = '\0';
    return 0;
}

int rw_fields_name(rw_fields_t *f, const char *s, size_t n)
{
    if (!f->open) {
        if (f->n == f->cap_at) {
            size_t cap = f->cap_at ? f->cap_at * 2 : FIELDS_INITIAL;
            rw_field_off_t *at = realloc(f->at, cap * sizeof *at);
            if (!at)
                return UV_ENOMEM;
            f->at = at;
            f->cap_at = cap;
        }
        rw_field_off_t *o = &f->at[f->n++];
        memset(o, 0, sizeof *o);
        o->name_off = (uint32_t)f->len;
        f->open = true;
    }
    if (rw_fields_append(f, s, n) != 0)
        return UV_ENOMEM;
    f->at[f->n - 1].name_len += (uint32_t)n;
    return 0;
}

int rw_fields_name_done(rw_fields_t *f)
{
    if (rw_fields_terminate(f) != 0)
        return UV_ENOMEM;
    /* The value starts after the name's NUL; it may stay empty. */
    f->at[f->n - 1].value_off = (uint32_t)f->len;
    f->open = false;
    return 0;
}

int rw_fields_value(rw_fields_t *f, const char *s, size_t n)
{
    if (rw_fields_append(f, s, n) != 0)
        return UV_ENOMEM;
    f->at[f->n - 1].value_len += (uint32_t)n;
    return 0;
}

int rw_fields_value_done(rw_fields_t *f)
{
    return rw_fields_terminate(f);
}

void rw_fields_export(const rw_fields_t *f, size_t from, size_t to, rw_http_header_t *out)
{
    for (size_t i = from; i < to; i++) {
        const rw_field_off_t *o = &f->at[i];
        rw_http_header_t *h = &out[i - from];
        h->name = f->bytes + o->name_off;
        h->name_len = o->name_len;
        h->value = f->bytes + o->value_off;
        h->value_len = o->value_len;
    }
}

void rw_fields_free(rw_fields_t *f)
{
    free(f->bytes);
    free(f->at);
    memset(f, 0, sizeof *f);
}
