/* rw_bench_authorizer: an HTTP API Lambda authorizer with simple responses
 * (payload 2.0), for bench/auth/run: authorized when the first identity
 * source (the X-Key header) equals $RW_BENCH_KEY ("bench-key"). A Lambda
 * `bootstrap` on reelway's C runtime client. */
#include "reelway/runtime.h"

#include <stdlib.h>
#include <string.h>

static void on_authorize(rw_invocation_t *inv)
{
    const char *want = getenv("RW_BENCH_KEY");
    const cJSON *sources = cJSON_GetObjectItemCaseSensitive(inv->event, "identitySource");
    const cJSON *key = cJSON_GetArrayItem(sources, 0);
    bool ok = cJSON_IsString(key) && strcmp(key->valuestring, want && *want ? want : "bench-key") == 0;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddBoolToObject(out, "isAuthorized", ok);
    cJSON *context = cJSON_AddObjectToObject(out, "context");
    cJSON_AddStringToObject(context, "principal", "bench-user");
    rw_runtime_respond_json(inv, out);
}

int main(void)
{
    rw_runtime_t *rt = rw_runtime_new();
    rw_runtime_register(rt, "authorize", on_authorize);
    int status = rw_runtime_run(rt);
    rw_runtime_free(rt);
    return status;
}
