/* rw_fn_hello: the smallest reelway function. Behind an HttpApi route it gets
 * an API Gateway v2.0 event and answers a v2.0 response; invoked directly, it
 * greets event.name. */
#include "reelway/runtime.h"

#include <stdio.h>

static void on_hello(rw_invocation_t *inv)
{
    /* A name from the query string (?name=...), else the event's, else "world". */
    const cJSON *query = cJSON_GetObjectItemCaseSensitive(inv->event, "queryStringParameters");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(query, "name");
    if (!cJSON_IsString(name))
        name = cJSON_GetObjectItemCaseSensitive(inv->event, "name");
    char message[256];
    snprintf(message, sizeof message, "hello, %s",
             cJSON_IsString(name) ? name->valuestring : "world");
    rw_runtime_log(inv, RW_RUNTIME_INFO, "%s", message);

    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "message", message);
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "statusCode", 200);
    cJSON *headers = cJSON_AddObjectToObject(out, "headers");
    cJSON_AddStringToObject(headers, "content-type", "application/json");
    cJSON_AddStringToObject(out, "body", text ? text : "{}");
    cJSON_free(text);
    rw_runtime_respond_json(inv, out);
}

int main(void)
{
    rw_runtime_t *rt = rw_runtime_new();
    rw_runtime_register(rt, "hello", on_hello);
    int status = rw_runtime_run(rt);
    rw_runtime_free(rt);
    return status;
}
