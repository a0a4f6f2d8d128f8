/* The template loader's foundations: the arena every load allocates from, the
 * diagnostics list, and the YAML tree built from libyaml's events (with the
 * checks CloudFormation makes on YAML itself: no anchors, no duplicate keys). */
#include "template_internal.h"

#include "reelway/error.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <yaml.h>

/* ---- arena ---------------------------------------------------------------- */

/* An arena may not grow past this, whatever the input: a 1 MiB template needs
 * a few MiB; the cap stops !Sub expansion bombs (each value is limited to
 * 64 KiB, but there can be many) and ends the load with RW_ELIMIT. */
#define ARENA_CAP ((size_t)64 << 20)
#define CHUNK_SIZE ((size_t)64 << 10)
#define ALIGN 16

typedef struct chunk_s {
    struct chunk_s *next;
    size_t size;
    size_t used;
    _Alignas(ALIGN) unsigned char data[];
} chunk_t;

struct rw__template_arena_s {
    chunk_t *head;
    jmp_buf *oom;
    size_t total;
};

rw__template_arena_t *rw__template_arena_new(jmp_buf *oom)
{
    rw__template_arena_t *a = calloc(1, sizeof *a);
    if (a)
        a->oom = oom;
    return a;
}

void rw__template_arena_free(rw__template_arena_t *a)
{
    if (!a)
        return;
    chunk_t *ch = a->head;
    while (ch) {
        chunk_t *next = ch->next;
        free(ch);
        ch = next;
    }
    free(a);
}

void *rw__template_alloc(rw__template_arena_t *a, size_t size)
{
    size_t need = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (need < size)
        longjmp(*a->oom, RW_ELIMIT);
    chunk_t *ch = a->head;
    if (!ch || ch->size - ch->used < need) {
        size_t csize = need > CHUNK_SIZE / 4 ? need : CHUNK_SIZE;
        if (a->total + csize > ARENA_CAP)
            longjmp(*a->oom, RW_ELIMIT);
        chunk_t *fresh = malloc(sizeof *fresh + csize);
        if (!fresh)
            longjmp(*a->oom, UV_ENOMEM);
        fresh->size = csize;
        fresh->used = 0;
        a->total += csize;
        if (csize == need && ch) {
            /* A big block gets its own chunk, behind the current one, so
             * the current chunk's free space is not thrown away. */
            fresh->next = ch->next;
            ch->next = fresh;
        } else {
            fresh->next = ch;
            a->head = fresh;
        }
        ch = fresh;
    }
    void *p = ch->data + ch->used;
    ch->used += need;
    memset(p, 0, size);
    return p;
}

char *rw__template_strndup(rw__template_arena_t *a, const char *s, size_t n)
{
    char *p = rw__template_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *rw__template_strdup(rw__template_arena_t *a, const char *s)
{
    return s ? rw__template_strndup(a, s, strlen(s)) : NULL;
}

char *rw__template_printf(rw__template_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        longjmp(*a->oom, RW_EPARSE);
    char *p = rw__template_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void *rw__template_push(rw__template_arena_t *a, void *array_ptr, size_t *count, size_t elem)
{
    unsigned char **arr = array_ptr;
    size_t n = *count;
    /* Capacity is 4, 8, 16, ... and implied by the count: grow when full. */
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0)) {
        size_t cap = n == 0 ? 4 : n * 2;
        if (cap > SIZE_MAX / elem)
            longjmp(*a->oom, RW_ELIMIT);
        unsigned char *fresh = rw__template_alloc(a, cap * elem);
        if (n)
            memcpy(fresh, *arr, n * elem);
        *arr = fresh;
    }
    *count = n + 1;
    unsigned char *p = *arr + n * elem;
    memset(p, 0, elem);
    return p;
}

/* ---- diagnostics ---------------------------------------------------------- */

void rw_diag_list_init(rw_diag_list_t *list)
{
    memset(list, 0, sizeof *list);
}

void rw_diag_list_free(rw_diag_list_t *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i].message);
    free(list->items);
    memset(list, 0, sizeof *list);
}

static int diag_vadd(rw_diag_list_t *list, int line, int col, const char *fmt, va_list ap)
{
    if (list->count >= RW_DIAG_MAX) {
        list->truncated = true;
        return 0;
    }
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        rw_diag_t *items = realloc(list->items, cap * sizeof *items);
        if (!items)
            return UV_ENOMEM;
        list->items = items;
        list->cap = cap;
    }
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        return RW_EPARSE;
    char *msg = malloc((size_t)n + 1);
    if (!msg)
        return UV_ENOMEM;
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    list->items[list->count++] = (rw_diag_t){.line = line, .col = col, .message = msg};
    return 0;
}

int rw_diag_list_add(rw_diag_list_t *list, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = diag_vadd(list, line, col, fmt, ap);
    va_end(ap);
    return rc;
}

void rw_diag_list_print(const rw_diag_list_t *list, const char *file, FILE *out)
{
    for (size_t i = 0; i < list->count; i++) {
        const rw_diag_t *d = &list->items[i];
        if (d->line > 0)
            fprintf(out, "%s:%d:%d: error: %s\n", file, d->line, d->col, d->message);
        else
            fprintf(out, "%s: error: %s\n", file, d->message);
    }
    if (list->truncated)
        fprintf(out, "%s: error: more than %d errors; the rest are not shown\n", file, RW_DIAG_MAX);
}

static void report_v(ctx_t *c, int line, int col, const char *fmt, va_list ap)
{
    if (c->quiet)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* A value in Globals is checked again for each resource that inherits
     * it: the same problem at the same place is reported once. */
    const rw_diag_list_t *d = c->diags;
    for (size_t i = c->first_diag; i < d->count; i++)
        if (d->items[i].line == line && d->items[i].col == col &&
            strcmp(d->items[i].message, msg) == 0)
            return;
    int rc = rw_diag_list_add(c->diags, line, col, "%s", msg);
    if (rc < 0)
        longjmp(c->oom, rc);
}

void rw__template_error(ctx_t *c, const node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report_v(c, n ? n->line : 0, n ? n->col : 0, fmt, ap);
    va_end(ap);
}

void rw__template_error_at(ctx_t *c, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report_v(c, line, col, fmt, ap);
    va_end(ap);
}

const node_t *rw__template_where(const node_t *n)
{
    return n && n->key ? n->key : n;
}

/* ---- YAML -> tree ------------------------------------------------------- */

/* Deeper than this is not a template; it also bounds every recursive walk. */
#define MAX_DEPTH 64

/* CloudFormation's short-form intrinsics that reelway does not evaluate. */
static const char *const unsupported_tags[] = {
    "!If",   "!Join",      "!Select",      "!Split",  "!FindInMap",    "!Base64",
    "!Cidr", "!GetAZs",    "!ImportValue", "!Equals", "!And",          "!Or",
    "!Not",  "!Condition", "!Transform",   "!Length", "!ToJsonString", "!ForEach",
    NULL};

typedef struct yaml_state_s {
    yaml_parser_t parser;
    yaml_event_t event;
    bool have_event;
} yaml_state_t;

void rw__template_yaml_cleanup(ctx_t *c)
{
    yaml_state_t *y = c->yaml;
    if (!y)
        return;
    if (y->have_event)
        yaml_event_delete(&y->event);
    yaml_parser_delete(&y->parser);
    free(y);
    c->yaml = NULL;
}

/* Checks a node's tag; returns the tag to keep (the intrinsics) or NULL. */
static const char *check_tag(ctx_t *c, node_t *n, const char *tag)
{
    static const char yaml_prefix[] = "tag:yaml.org,2002:";
    if (!tag)
        return NULL;
    if (strncmp(tag, yaml_prefix, sizeof yaml_prefix - 1) == 0) {
        const char *t = tag + sizeof yaml_prefix - 1;
        if (n->kind == RW__TPL_SCALAR && strcmp(t, "str") == 0) {
            n->quoted = true;
            return NULL;
        }
        if ((n->kind == RW__TPL_MAP && strcmp(t, "map") == 0) ||
            (n->kind == RW__TPL_SEQ && strcmp(t, "seq") == 0))
            return NULL;
        rw__template_error(c, n, "YAML tag !!%s is not supported (CloudFormation rejects it)", t);
        return NULL;
    }
    if (strcmp(tag, "!Ref") == 0 || strcmp(tag, "!Sub") == 0 || strcmp(tag, "!GetAtt") == 0)
        return rw__template_strdup(c->scratch, tag);
    for (size_t i = 0; unsupported_tags[i]; i++) {
        if (strcmp(tag, unsupported_tags[i]) == 0) {
            rw__template_error(c, n,
                               "%s is not supported by reelway: the intrinsic functions are "
                               "!Ref, !Sub and !GetAtt",
                               tag);
            return rw__template_strdup(c->scratch, tag);
        }
    }
    rw__template_error(c, n, "unknown tag %.64s", tag);
    return NULL;
}

typedef rw__template_key_ref_t key_ref_t;

static int cmp_key_ref(const void *a, const void *b)
{
    const key_ref_t *x = a, *y = b;
    int d = strcmp(x->str, y->str);
    if (d)
        return d;
    return x->pair < y->pair ? -1 : x->pair > y->pair;
}

/* Ends a mapping: pairs up kids, links values to keys, reports bad and
 * duplicate keys, and keeps the keys sorted so that lookups are O(log n)
 * (and this check O(n log n)) for maps of any size. */
static void finish_map(ctx_t *c, node_t *m)
{
    size_t pairs = m->count / 2;
    m->count = pairs;
    key_ref_t *refs = pairs ? rw__template_alloc(c->scratch, pairs * sizeof *refs) : NULL;
    size_t nrefs = 0;
    for (size_t i = 0; i < pairs; i++) {
        node_t *k = MAP_KEY(m, i);
        MAP_VAL(m, i)->key = k;
        if (k->kind != RW__TPL_SCALAR) {
            rw__template_error(c, k, "mapping keys must be strings, not a %s",
                               rw__template_kind_name(k));
            continue;
        }
        if (k->tag) {
            rw__template_error(c, k, "a mapping key cannot be an intrinsic function (%s)", k->tag);
            continue;
        }
        if (!k->quoted && strcmp(k->str, "<<") == 0) {
            rw__template_error(c, k,
                               "YAML merge keys (<<) are not supported "
                               "(CloudFormation rejects them)");
            continue;
        }
        refs[nrefs++] = (key_ref_t){k->str, i};
    }
    if (nrefs > 1)
        qsort(refs, nrefs, sizeof *refs, cmp_key_ref);
    m->index = refs;
    m->index_count = nrefs;
    for (size_t i = 1; i < nrefs; i++) {
        if (strcmp(refs[i].str, refs[i - 1].str) != 0)
            continue;
        size_t first = i - 1;
        while (first > 0 && strcmp(refs[first - 1].str, refs[i].str) == 0)
            first--;
        node_t *k = MAP_KEY(m, refs[i].pair);
        const node_t *k0 = MAP_KEY(m, refs[first].pair);
        k->dup = true;
        rw__template_error(c, k, "duplicate key '%.128s' (first at line %d)", k->str, k0->line);
    }
}

static int reader_line(const char *data, size_t len, size_t offset, int *col)
{
    int line = 1;
    size_t bol = 0;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (data[i] == '\n') {
            line++;
            bol = i + 1;
        }
    }
    *col = (int)(offset - bol) + 1;
    return line;
}

static void report_yaml_error(ctx_t *c, const yaml_parser_t *p, const char *data, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR)
        longjmp(c->oom, UV_ENOMEM);
    if (p->error == YAML_READER_ERROR) {
        int col;
        int line = reader_line(data, len, p->problem_offset, &col);
        rw__template_error_at(c, line, col, "YAML: %s", p->problem ? p->problem : "bad input");
        return;
    }
    int line = (int)p->problem_mark.line + 1;
    int col = (int)p->problem_mark.column + 1;
    if (p->context)
        rw__template_error_at(c, line, col, "YAML syntax error: %s %s (line %d)",
                              p->problem ? p->problem : "error", p->context,
                              (int)p->context_mark.line + 1);
    else
        rw__template_error_at(c, line, col, "YAML syntax error: %s",
                              p->problem ? p->problem : "error");
}

typedef struct frame_s {
    node_t *node;
} frame_t;

static node_t *new_node(ctx_t *c, rw__template_node_kind_t kind, const yaml_mark_t *mark)
{
    node_t *n = rw__template_alloc(c->scratch, sizeof *n);
    n->kind = kind;
    n->line = (int)mark->line + 1;
    n->col = (int)mark->column + 1;
    return n;
}

static void add_kid(ctx_t *c, node_t *parent, node_t *kid)
{
    node_t **slot = RW_TPL_PUSH(c->scratch, parent->kids, parent->count);
    *slot = kid;
}

const node_t *rw__template_parse_yaml(ctx_t *c, const char *data, size_t len)
{
    yaml_state_t *y = calloc(1, sizeof *y);
    if (!y)
        longjmp(c->oom, UV_ENOMEM);
    c->yaml = y;
    if (!yaml_parser_initialize(&y->parser)) {
        rw__template_yaml_cleanup(c);
        longjmp(c->oom, UV_ENOMEM);
    }
    yaml_parser_set_input_string(&y->parser, (const unsigned char *)data, len);

    frame_t stack[MAX_DEPTH + 1];
    int depth = 0;
    node_t *root = NULL;
    int documents = 0;
    bool failed = false;
    bool done = false;

    while (!done && !failed) {
        if (!yaml_parser_parse(&y->parser, &y->event)) {
            report_yaml_error(c, &y->parser, data, len);
            failed = true;
            break;
        }
        y->have_event = true;
        yaml_event_t *ev = &y->event;
        node_t *made = NULL;
        switch (ev->type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++documents > 1) {
                rw__template_error_at(c, (int)ev->start_mark.line + 1,
                                      (int)ev->start_mark.column + 1,
                                      "a template is one YAML document; a second one starts here");
                failed = true;
            }
            break;
        case YAML_SCALAR_EVENT: {
            made = new_node(c, RW__TPL_SCALAR, &ev->start_mark);
            made->len = ev->data.scalar.length;
            made->str =
                rw__template_strndup(c->scratch, (const char *)ev->data.scalar.value, made->len);
            made->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
            if (strlen(made->str) != made->len)
                rw__template_error(c, made, "a string contains a NUL character");
            if (ev->data.scalar.anchor)
                rw__template_error(c, made,
                                   "YAML anchors (&%.64s) are not supported "
                                   "(CloudFormation rejects them)",
                                   (const char *)ev->data.scalar.anchor);
            made->tag = check_tag(c, made, (const char *)ev->data.scalar.tag);
            break;
        }
        case YAML_ALIAS_EVENT:
            made = new_node(c, RW__TPL_SCALAR, &ev->start_mark);
            made->str = "";
            made->quoted = true; /* a placeholder: the alias is the one problem here */
            rw__template_error(c, made,
                               "YAML aliases (*%.64s) are not supported "
                               "(CloudFormation rejects them)",
                               (const char *)ev->data.alias.anchor);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            bool map = ev->type == YAML_MAPPING_START_EVENT;
            node_t *n = new_node(c, map ? RW__TPL_MAP : RW__TPL_SEQ, &ev->start_mark);
            const yaml_char_t *anchor =
                map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
            const yaml_char_t *tag = map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
            if (anchor)
                rw__template_error(c, n,
                                   "YAML anchors (&%.64s) are not supported "
                                   "(CloudFormation rejects them)",
                                   (const char *)anchor);
            n->tag = check_tag(c, n, (const char *)tag);
            if (depth == MAX_DEPTH) {
                rw__template_error(c, n, "nesting deeper than %d levels", MAX_DEPTH);
                failed = true;
                break;
            }
            stack[depth++].node = n;
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: {
            made = stack[--depth].node;
            if (made->kind == RW__TPL_MAP)
                finish_map(c, made);
            break;
        }
        default:
            break;
        }
        if (made) {
            if (depth > 0)
                add_kid(c, stack[depth - 1].node, made);
            else
                root = made;
        }
        yaml_event_delete(&y->event);
        y->have_event = false;
    }
    rw__template_yaml_cleanup(c);
    if (failed)
        return NULL;
    if (!root || rw__template_is_null(root)) {
        rw__template_error_at(c, 1, 1, "the template is empty");
        return NULL;
    }
    return root;
}

const char *rw__template_kind_name(const node_t *n)
{
    if (n->kind == RW__TPL_MAP)
        return "map";
    if (n->kind == RW__TPL_SEQ)
        return "list";
    return "string";
}

bool rw__template_is_null(const node_t *n)
{
    if (n->kind != RW__TPL_SCALAR || n->quoted || n->tag)
        return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

const node_t *rw__template_map_get(const node_t *m, const char *key)
{
    if (!m || m->kind != RW__TPL_MAP)
        return NULL;
    if (m->index) {
        /* The first of equal keys: the one a duplicate repeats. */
        size_t lo = 0, hi = m->index_count;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(m->index[mid].str, key) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < m->index_count && strcmp(m->index[lo].str, key) == 0)
            return MAP_VAL(m, m->index[lo].pair);
        return NULL;
    }
    for (size_t i = 0; i < m->count; i++) {
        const node_t *k = MAP_KEY(m, i);
        if (k->kind == RW__TPL_SCALAR && strcmp(k->str, key) == 0)
            return MAP_VAL(m, i);
    }
    return NULL;
}
