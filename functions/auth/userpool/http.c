/* API Gateway HTTP API events (payload 2.0) in, Lambda proxy responses out:
 * what the user pool reads from an event and how it answers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "userpool.h"

int64_t up_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* Standard base64 with padding, as API Gateway encodes binary bodies. */
static char *base64_decode(const char *text, size_t len, size_t *out_len)
{
    if (len % 4 != 0)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    if (out == NULL)
        return NULL;
    int n = EVP_DecodeBlock(out, (const unsigned char *)text, (int)len);
    if (n < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    for (size_t i = len; i > 0 && text[i - 1] == '=' && n > 0; i--)
        n--;
    out[n] = '\0';
    *out_len = (size_t)n;
    return (char *)out;
}

cJSON *up_event_json_body(const cJSON *event)
{
    const cJSON *body = get(event, "body");
    if (!cJSON_IsString(body))
        return NULL;
    const char *text = body->valuestring;
    size_t len = strlen(text);
    char *decoded = NULL;
    if (cJSON_IsTrue(get(event, "isBase64Encoded"))) {
        if (len > UP_BODY_MAX / 3 * 4 + 4 || (decoded = base64_decode(text, len, &len)) == NULL)
            return NULL;
        text = decoded;
    }
    /* cJSON decodes \u0000 into a NUL that would silently cut a string (a
     * password hashed shorter than typed): such bodies are refused whole. */
    cJSON *json = NULL;
    if (len <= UP_BODY_MAX && memchr(text, '\0', len) == NULL && strstr(text, "\\u0000") == NULL) {
        const char *end = NULL;
        json = cJSON_ParseWithLengthOpts(text, len, &end, 0);
        /* cJSON stops after the first value: anything but whitespace after it
         * makes the body invalid, as does a value that is not an object. */
        const char *p = end;
        while (json != NULL && p < text + len && strchr(" \t\r\n", *p) != NULL)
            p++;
        if (json != NULL && (!cJSON_IsObject(json) || p != text + len)) {
            cJSON_Delete(json);
            json = NULL;
        }
    }
    free(decoded);
    return json;
}

const char *up_event_header(const cJSON *event, const char *name)
{
    const cJSON *v = get(get(event, "headers"), name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *up_event_path(const cJSON *event)
{
    const cJSON *v = get(event, "rawPath");
    return cJSON_IsString(v) ? v->valuestring : "";
}

const cJSON *up_event_jwt_claims(const cJSON *event)
{
    const cJSON *claims =
        get(get(get(get(event, "requestContext"), "authorizer"), "jwt"), "claims");
    return cJSON_IsObject(claims) ? claims : NULL;
}

int up_respond_with_headers(rw_invocation_t *inv, int status, cJSON *headers, cJSON *body)
{
    cJSON *out = cJSON_CreateObject();
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (out == NULL || (body != NULL && text == NULL)) {
        cJSON_Delete(out);
        cJSON_Delete(headers);
        cJSON_free(text);
        return rw_runtime_fail(inv, "Runtime.OutOfMemory", "no memory for the response");
    }
    cJSON_AddNumberToObject(out, "statusCode", status);
    cJSON_AddItemToObject(out, "headers", headers ? headers : cJSON_CreateObject());
    cJSON_AddStringToObject(out, "body", text ? text : "");
    cJSON_AddBoolToObject(out, "isBase64Encoded", false);
    cJSON_free(text);
    return rw_runtime_respond_json(inv, out);
}

int up_respond(rw_invocation_t *inv, int status, cJSON *body, int64_t retry_after_s)
{
    cJSON *headers = cJSON_CreateObject();
    if (headers != NULL) {
        if (body != NULL)
            cJSON_AddStringToObject(headers, "content-type", "application/json");
        /* Tokens and account data must never sit in a shared cache (RFC 6749 §5.1). */
        cJSON_AddStringToObject(headers, "cache-control", "no-store");
        if (retry_after_s > 0) {
            char v[32];
            snprintf(v, sizeof v, "%lld", (long long)retry_after_s);
            cJSON_AddStringToObject(headers, "retry-after", v);
        }
        if (status == 401)
            cJSON_AddStringToObject(headers, "www-authenticate", "Bearer");
    }
    return up_respond_with_headers(inv, status, headers, body);
}

int up_respond_message(rw_invocation_t *inv, int status, const char *message)
{
    cJSON *body = cJSON_CreateObject();
    if (body != NULL)
        cJSON_AddStringToObject(body, "message", message);
    return up_respond(inv, status, body, 0);
}
