/* Shared by the template loader's files (template*.c) and nothing else: the
 * arena, the YAML node tree, the loader's state, intrinsic evaluation and the
 * typed getters that report what is wrong with a value. */
#ifndef REELWAY_GATEWAY_TEMPLATE_INTERNAL_H
#define REELWAY_GATEWAY_TEMPLATE_INTERNAL_H

#include "template.h"

#include <setjmp.h>
#include <stdarg.h>

/* ---- arena: every allocation of one load, freed at once ---------------- */

typedef struct rw__template_arena_s rw__template_arena_t;

/* Allocation failures (or the arena's size cap) longjmp to *oom with the
 * error code as value, so the loader's code never checks for NULL. */
rw__template_arena_t *rw__template_arena_new(jmp_buf *oom);
void rw__template_arena_free(rw__template_arena_t *arena);
void *rw__template_alloc(rw__template_arena_t *arena, size_t size); /* zeroed */
char *rw__template_strndup(rw__template_arena_t *arena, const char *s, size_t n);
char *rw__template_strdup(rw__template_arena_t *arena, const char *s); /* NULL -> NULL */
char *rw__template_printf(rw__template_arena_t *arena, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends one zeroed element to an array whose capacity is implied by its
 * count (grows at 0, 4, 8, 16, ...), returns the new element. */
void *rw__template_push(rw__template_arena_t *arena, void *array_ptr, size_t *count, size_t elem);

#define RW_TPL_PUSH(arena, arr, count)                                                             \
    ((__typeof__(*(arr)) *)rw__template_push((arena), &(arr), &(count), sizeof *(arr)))

/* ---- the YAML tree ------------------------------------------------------ */

typedef enum rw__template_node_kind_e {
    RW__TPL_SCALAR,
    RW__TPL_SEQ,
    RW__TPL_MAP
} rw__template_node_kind_t;

typedef struct rw__template_node_s rw__template_node_t;
struct rw__template_node_s {
    rw__template_node_kind_t kind;
    int line, col;   /* 1-based */
    const char *tag; /* NULL, "!Ref", "!Sub", "!GetAtt", ... (already checked) */
    const char *str; /* SCALAR: the text, NUL-terminated */
    size_t len;
    bool quoted;                    /* SCALAR: quoted, block or !!str: never null, never a bool */
    bool dup;                       /* a key repeating an earlier key of its map (reported) */
    rw__template_node_t **kids;     /* SEQ: items; MAP: key, value, key, value, ... */
    size_t count;                   /* SEQ: items; MAP: pairs */
    const rw__template_node_t *key; /* a mapping value: its key */
    const struct rw__template_key_ref_s *index; /* MAP: its keys sorted, for lookups */
    size_t index_count;
};

/* An entry of a map's sorted key index. */
typedef struct rw__template_key_ref_s {
    const char *str;
    size_t pair;
} rw__template_key_ref_t;

typedef rw__template_node_t node_t;

#define MAP_KEY(m, i) ((m)->kids[2 * (i)])
#define MAP_VAL(m, i) ((m)->kids[2 * (i) + 1])

/* ---- the loader's state -------------------------------------------------- */

typedef enum rw__template_sym_type_e {
    SYM_FUNCTION,
    SYM_REST_API,
    SYM_HTTP_API,
    SYM_BUCKET,
    SYM_QUEUE,
    SYM_API_KEY,
    SYM_USAGE_PLAN,
    SYM_USAGE_PLAN_KEY,
    SYM_OTHER /* an unsupported resource type: already reported, refs fail quietly */
} rw__template_sym_type_t;

typedef struct rw__template_sym_s {
    const char *id;
    rw__template_sym_type_t type;
    int index;              /* into the model array of its type */
    const node_t *key;      /* the logical id in Resources (NULL: implicit) */
    const node_t *resource; /* the resource's map (NULL: implicit) */
} rw__template_sym_t;

typedef struct rw__template_ctx_s {
    jmp_buf oom;
    rw__template_arena_t *scratch; /* the tree and temporaries */
    rw__template_arena_t *arena;   /* the model */
    rw_template_t *tpl;
    rw_diag_list_t *diags;
    size_t first_diag; /* this load's diagnostics start here in diags */
    bool quiet;        /* pass 1: evaluate without reporting */
    bool no_resources; /* names: Ref/GetAtt of resources are errors */
    const rw_template_params_t *params;
    rw__template_sym_t *syms; /* sorted by id once pass 1 is done */
    size_t sym_count;
    rw_tpl_param_t **params_sorted; /* by name, for Ref and ${} lookups */
    size_t params_sorted_count;
    const node_t *root;
    const node_t *globals_function, *globals_api, *globals_http_api; /* maps or NULL */
    /* usage plans declared through Auth.UsagePlan: PER_API per REST API, one SHARED */
    int shared_usage_plan; /* index, -1 */
    void *yaml;            /* live libyaml state, freed by rw__template_yaml_cleanup */
} rw__template_ctx_t;

typedef rw__template_ctx_t ctx_t;

/* Reports a problem at node n (its key's position when use_key and it has one). */
void rw__template_error(ctx_t *c, const node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void rw__template_error_at(ctx_t *c, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The key introducing n when there is one, else n: where "X is required" points. */
const node_t *rw__template_where(const node_t *n);

/* Builds the tree (YAML syntax errors are reported; returns NULL after one). */
const node_t *rw__template_parse_yaml(ctx_t *c, const char *data, size_t len);
/* Frees the libyaml state left behind when an allocation failure jumped out. */
void rw__template_yaml_cleanup(ctx_t *c);

/* ---- values -------------------------------------------------------------- */

/* What a value node evaluates to. */
typedef struct rw__template_val_s {
    const char *str;  /* the resolved text; NULL for a map or a list */
    int sym;          /* a Ref/GetAtt naming a resource as a whole: index into syms */
    const char *attr; /* GetAtt attribute; NULL for a Ref */
    bool is_null;     /* a YAML null (~, null, nothing) */
    const node_t *node;
} rw__template_val_t;

typedef rw__template_val_t val_t;

/* Evaluates n: a scalar, !Ref / !Sub / !GetAtt or their long forms. Returns
 * false after reporting a problem (or quietly, for a reference to a resource
 * of an unsupported type, already reported). Maps and lists give str NULL. */
bool rw__template_eval(ctx_t *c, const node_t *n, const char *what, val_t *out);
/* True when n is an intrinsic function (tagged, or a single-key Ref/Fn:: map). */
bool rw__template_is_intrinsic(const node_t *n);
/* A plain scalar null (~, null, empty). */
bool rw__template_is_null(const node_t *n);

const char *rw__template_kind_name(const node_t *n);

/* Typed getters: report a precise problem at n and return false when the
 * value has the wrong type or range. Strings returned live in the scratch
 * arena unless copied with rw__template_keep. */
bool rw__template_get_str(ctx_t *c, const node_t *n, const char *what, const char **out);
bool rw__template_get_int(ctx_t *c, const node_t *n, const char *what, long min, long max,
                          long *out);
bool rw__template_get_double(ctx_t *c, const node_t *n, const char *what, double min, double max,
                             double *out);
bool rw__template_get_bool(ctx_t *c, const node_t *n, const char *what, bool *out);
/* A list of strings (a single string too when one_ok). */
bool rw__template_get_strs(ctx_t *c, const node_t *n, const char *what, bool one_ok, char ***out,
                           size_t *count);
/* A map that is not an intrinsic. */
bool rw__template_get_map(ctx_t *c, const node_t *n, const char *what);
/* A string among choices (exact match unless nocase). Returns the index or -1. */
int rw__template_get_enum(ctx_t *c, const node_t *n, const char *what, const char *const *choices,
                          bool nocase);

char *rw__template_keep(ctx_t *c, const char *s); /* copies into the model arena */

/* The value of key in map m (NULL when absent or m is not a map). */
const node_t *rw__template_map_get(const node_t *m, const char *key);

/* A property a resource or section may not have, and why. */
typedef struct rw__template_unsupported_s {
    const char *key;
    const char *reason;
} rw__template_unsupported_t;

/* Reports every key of map m that is not in allowed (NULL-terminated):
 * "'K' is not supported by reelway: REASON" for those in unsupported (may be
 * NULL), "unknown property 'K' in WHERE" for the others. */
void rw__template_check_keys(ctx_t *c, const node_t *m, const char *where,
                             const char *const *allowed,
                             const rw__template_unsupported_t *unsupported);

/* Requires key in m, else reports "WHERE: KEY is required" and returns NULL. */
const node_t *rw__template_require(ctx_t *c, const node_t *m, const char *key, const char *where);

/* SAM's Globals merge: maps merge recursively, lists concatenate, anything
 * else (and intrinsics) the local value wins. Only keys in allowed are taken
 * from the globals (the others were reported when Globals was checked). */
const node_t *rw__template_merge(ctx_t *c, const node_t *globals, const node_t *local,
                                 const char *const *allowed);

/* ---- symbols ------------------------------------------------------------- */

int rw__template_sym_find(const ctx_t *c, const char *id); /* index or -1 */
const char *rw__template_sym_type_name(rw__template_sym_type_t type);
/* Resolves a reference value (Ref X, GetAtt X.Arn, or an ARN / name string
 * naming one) to the model index of a resource of type want; reports
 * "WHAT must refer to ..." and returns -1 otherwise. */
int rw__template_resolve_ref(ctx_t *c, const node_t *n, const char *what,
                             rw__template_sym_type_t want);
/* The model index of the function an ARN (or an API Gateway invocation URI
 * holding one) names, or -1. */
int rw__template_function_from_arn(ctx_t *c, const char *s);

/* ---- the parts of the loader --------------------------------------------- */

/* template.c */
void rw__template_sort_syms(ctx_t *c);
/* Reads Metadata.Reelway of a resource (checking its keys against allowed). */
const node_t *rw__template_reelway_metadata(ctx_t *c, const rw__template_sym_t *s,
                                            const char *const *allowed);

/* template_api.c */
void rw__template_declare_apis(ctx_t *c); /* pass 1: stages, mounts, SAM's usage plans */
void rw__template_check_api_globals(ctx_t *c);
void rw__template_load_apis(ctx_t *c);
void rw__template_add_api_event(ctx_t *c, int fn, const node_t *name, const node_t *event,
                                bool http);
void rw__template_check_routes(ctx_t *c);
void rw__template_load_usage_plans(ctx_t *c);
bool rw__template_check_path(ctx_t *c, const node_t *n, const char *path, bool greedy_ok,
                             const char *what);

/* shared by template_api.c and template_routes.c */
extern const char *const rw__template_http_methods[]; /* GET ... OPTIONS, ANY; NULL-ended */
bool rw__template_header_name_ok(const char *s);
bool rw__template_media_type_ok(const char *s);
bool rw__template_url_ok(const char *s); /* http(s)://host... without spaces */
int rw__template_find_authorizer(const rw_tpl_api_t *a, const char *name);

/* template_routes.c */
void rw__template_load_definition_body(ctx_t *c, int api, const node_t *body);

/* template_events.c */
void rw__template_add_s3_event(ctx_t *c, int fn, const node_t *name, const node_t *event);
void rw__template_add_sqs_event(ctx_t *c, int fn, const node_t *name, const node_t *event);
void rw__template_add_schedule_event(ctx_t *c, int fn, const node_t *name, const node_t *event);
void rw__template_check_events(ctx_t *c);

/* Used across files: regular expressions are validated the way the gateway
 * will compile them (POSIX extended). */
bool rw__template_check_regex(ctx_t *c, const node_t *n, const char *what, const char *re);

#endif
