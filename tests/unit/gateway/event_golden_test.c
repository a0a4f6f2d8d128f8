/* Golden events: each example of tests/golden/ (taken from the AWS documentation,
 * see its README) is rebuilt from the request its sidecar describes, and the
 * result must equal the example structurally: same keys, same values, same
 * omissions. Documented deviations are applied to the example as patches, and
 * every patch must apply, so none can silently go stale. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

#define MAX_ITEMS 64

static char *read_file(const char *name)
{
    const char *dir = getenv("RW_SOURCE_DIR");
    char path[1024];
    FILE *f;
    long n;
    char *buf;

    snprintf(path, sizeof(path), "%s/tests/golden/%s", dir ? dir : ".", name);
    f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static cJSON *load_json(const char *name)
{
    char *text = read_file(name);
    cJSON *json = cJSON_Parse(text);
    if (json == NULL)
        fail_msg("%s is not valid JSON near: %.40s", name, cJSON_GetErrorPtr());
    free(text);
    return json;
}

static const char *str_or_null(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Everything the sidecar describes, kept alive for the build. */
typedef struct described_s {
    rw_event_route_t route;
    rw_event_request_t rq;
    rw_event_kv_t headers[MAX_ITEMS], path_params[MAX_ITEMS], stage_vars[MAX_ITEMS];
    const char *media_types[MAX_ITEMS];
    rw_event_identity_t identity;
    char path[2048];
} described_t;

static size_t kv_from_object(const cJSON *obj, rw_event_kv_t *kv)
{
    size_t n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, obj)
    {
        assert_true(n < MAX_ITEMS);
        assert_true(cJSON_IsString(item));
        kv[n].name = item->string;
        kv[n].name_len = strlen(item->string);
        kv[n].value = item->valuestring;
        kv[n].value_len = strlen(item->valuestring);
        n++;
    }
    return n;
}

static void describe(described_t *d, const cJSON *side)
{
    const cJSON *route = cJSON_GetObjectItemCaseSensitive(side, "route");
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(side, "request");
    const cJSON *item;
    const char *target, *q, *prefix;

    memset(d, 0, sizeof(*d));
    assert_non_null(route);
    assert_non_null(rq);
    d->route.payload_version = cJSON_GetObjectItemCaseSensitive(route, "payloadVersion")->valueint;
    d->route.http_api = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(route, "httpApi"));
    d->route.account_id = str_or_null(route, "accountId");
    d->route.api_id = str_or_null(route, "apiId");
    d->route.stage = str_or_null(route, "stage");
    d->route.route_key = str_or_null(route, "routeKey");
    d->route.resource_path = str_or_null(route, "resourcePath");
    d->route.resource_id = str_or_null(route, "resourceId");
    d->route.domain_name = str_or_null(route, "domainName");
    prefix = str_or_null(route, "stagePrefix");
    d->route.stage_prefix_len = prefix ? strlen(prefix) : 0;
    d->route.n_path_params =
        kv_from_object(cJSON_GetObjectItemCaseSensitive(route, "pathParameters"), d->path_params);
    d->route.path_params = d->path_params;
    d->route.n_stage_vars =
        kv_from_object(cJSON_GetObjectItemCaseSensitive(route, "stageVariables"), d->stage_vars);
    d->route.stage_vars = d->stage_vars;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(route, "binaryMediaTypes"))
    {
        d->media_types[d->route.n_binary_media_types++] = item->valuestring;
    }
    d->route.binary_media_types = d->media_types;
    d->route.authorizer = cJSON_GetObjectItemCaseSensitive(route, "authorizer");

    d->rq.method = str_or_null(rq, "method");
    target = str_or_null(rq, "target");
    assert_non_null(target);
    q = strchr(target, '?');
    d->rq.raw_path = target;
    d->rq.raw_path_len = q ? (size_t)(q - target) : strlen(target);
    if (q) {
        d->rq.raw_query = q + 1;
        d->rq.raw_query_len = strlen(q + 1);
    }
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(rq, "headers"))
    {
        rw_event_kv_t *kv = &d->headers[d->rq.n_headers++];
        const char *name = cJSON_GetArrayItem(item, 0)->valuestring;
        const char *value = cJSON_GetArrayItem(item, 1)->valuestring;
        kv->name = name;
        kv->name_len = strlen(name);
        kv->value = value;
        kv->value_len = strlen(value);
    }
    d->rq.headers = d->headers;
    d->rq.source_ip = str_or_null(rq, "sourceIp");
    d->rq.protocol = str_or_null(rq, "protocol");
    d->rq.request_id = str_or_null(rq, "requestId");
    d->rq.extended_request_id = str_or_null(rq, "extendedRequestId");
    d->rq.time_ms = (int64_t)cJSON_GetObjectItemCaseSensitive(rq, "timeEpoch")->valuedouble;
    d->rq.body = str_or_null(rq, "body");
    d->rq.body_len = d->rq.body ? strlen(d->rq.body) : 0;
    d->rq.trace_id = str_or_null(rq, "traceId");
    d->rq.forwarded_proto = str_or_null(rq, "forwardedProto");
    item = cJSON_GetObjectItemCaseSensitive(rq, "forwardedPort");
    d->rq.forwarded_port = item ? (unsigned)item->valueint : 0;
}

/* ---- RFC 6901 pointers and the patches ------------------------------------- */

static void pointer_token(const char **p, char *out, size_t outlen)
{
    size_t o = 0;
    (*p)++; /* the '/' */
    while (**p && **p != '/' && o + 1 < outlen) {
        if (**p == '~' && (*p)[1] == '1') {
            out[o++] = '/';
            *p += 2;
        } else if (**p == '~' && (*p)[1] == '0') {
            out[o++] = '~';
            *p += 2;
        } else {
            out[o++] = *(*p)++;
        }
    }
    out[o] = '\0';
}

static cJSON *parent_of(cJSON *root, const char *ptr, char *last, size_t lastlen)
{
    cJSON *cur = root;
    const char *p = ptr;
    char tok[256];

    pointer_token(&p, tok, sizeof(tok));
    while (*p == '/') {
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        if (cur == NULL)
            fail_msg("patch path %s: no member \"%s\"", ptr, tok);
        pointer_token(&p, tok, sizeof(tok));
    }
    snprintf(last, lastlen, "%s", tok);
    return cur;
}

static void apply_patches(cJSON *golden, const cJSON *patches)
{
    const cJSON *patch;
    cJSON_ArrayForEach(patch, patches)
    {
        const char *op = str_or_null(patch, "op");
        const char *path = str_or_null(patch, "path");
        char key[256];
        assert_non_null(str_or_null(patch, "why"));
        cJSON *parent = parent_of(golden, path, key, sizeof(key));
        if (strcmp(op, "remove") == 0) {
            if (cJSON_GetObjectItemCaseSensitive(parent, key) == NULL)
                fail_msg("patch remove %s: nothing there (stale patch)", path);
            cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
        } else if (strcmp(op, "set") == 0) {
            cJSON *value = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(patch, "value"), true);
            cJSON *old = cJSON_GetObjectItemCaseSensitive(parent, key);
            if (old != NULL && cJSON_Compare(old, value, true))
                fail_msg("patch set %s: already that value (stale patch)", path);
            if (old != NULL)
                cJSON_ReplaceItemInObjectCaseSensitive(parent, key, value);
            else
                cJSON_AddItemToObject(parent, key, value);
        } else {
            fail_msg("unknown patch op %s", op);
        }
    }
}

/* ---- structural comparison ---------------------------------------------------- */

static void expect_same(const cJSON *want, const cJSON *got, const char *path)
{
    char sub[512];
    char *w, *g;

    if ((want->type & 0xff) != (got->type & 0xff)) {
        w = cJSON_PrintUnformatted(want);
        g = cJSON_PrintUnformatted(got);
        fail_msg("%s: expected %s, got %s", path, w, g);
    }
    if (cJSON_IsObject(want)) {
        const cJSON *item;
        cJSON_ArrayForEach(item, want)
        {
            snprintf(sub, sizeof(sub), "%s/%s", path, item->string);
            const cJSON *other = cJSON_GetObjectItemCaseSensitive(got, item->string);
            if (other == NULL) {
                w = cJSON_PrintUnformatted(item);
                fail_msg("%s: missing (expected %s)", sub, w);
            }
            expect_same(item, other, sub);
        }
        cJSON_ArrayForEach(item, got)
        {
            snprintf(sub, sizeof(sub), "%s/%s", path, item->string);
            if (cJSON_GetObjectItemCaseSensitive(want, item->string) == NULL) {
                g = cJSON_PrintUnformatted(item);
                fail_msg("%s: unexpected member %s (the example omits it)", sub, g);
            }
        }
        return;
    }
    if (cJSON_IsArray(want)) {
        int n = cJSON_GetArraySize(want);
        assert_int_equal(cJSON_GetArraySize(got), n);
        for (int i = 0; i < n; i++) {
            snprintf(sub, sizeof(sub), "%s/%d", path, i);
            expect_same(cJSON_GetArrayItem(want, i), cJSON_GetArrayItem(got, i), sub);
        }
        return;
    }
    if (!cJSON_Compare(want, got, true)) {
        w = cJSON_PrintUnformatted(want);
        g = cJSON_PrintUnformatted(got);
        fail_msg("%s: expected %s, got %s", path, w, g);
    }
}

static void check_golden(const char *sidecar_name)
{
    cJSON *side = load_json(sidecar_name);
    cJSON *golden = load_json(str_or_null(side, "golden"));
    described_t *d = calloc(1, sizeof(*d));
    char *json = NULL;
    size_t len = 0;
    cJSON *got;

    assert_non_null(d);
    describe(d, side);
    apply_patches(golden, cJSON_GetObjectItemCaseSensitive(side, "patches"));
    assert_int_equal(rw_event_build(&d->route, &d->rq, &json, &len), 0);
    assert_int_equal(strlen(json), len);
    got = cJSON_ParseWithLength(json, len);
    if (got == NULL)
        fail_msg("the event is not valid JSON: %s", json);
    expect_same(golden, got, "");

    cJSON_Delete(got);
    free(json);
    free(d);
    cJSON_Delete(golden);
    cJSON_Delete(side);
}

static void golden_http_api_v2_documentation(void **state)
{
    (void)state;
    check_golden("apigw-http-v2.request.json");
}

static void golden_http_api_v1_documentation(void **state)
{
    (void)state;
    check_golden("apigw-http-v1.request.json");
}

static void golden_http_api_v2_capture(void **state)
{
    (void)state;
    check_golden("lambda-http-v2-capture.request.json");
}

static void golden_rest_api_capture(void **state)
{
    (void)state;
    check_golden("lambda-rest-capture.request.json");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden_http_api_v2_documentation),
        cmocka_unit_test(golden_http_api_v1_documentation),
        cmocka_unit_test(golden_http_api_v2_capture),
        cmocka_unit_test(golden_rest_api_capture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
