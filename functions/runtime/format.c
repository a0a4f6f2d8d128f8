/* The byte formats a Lambda runtime writes: log lines, error documents, the
 * HTTP-integration prelude of streaming responses, and base64 for trailers. */
#include "reelway/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *rw_runtime_level_name(rw_runtime_level_t level)
{
    switch (level) {
    case RW_RUNTIME_DEBUG:
        return "DEBUG";
    case RW_RUNTIME_INFO:
        return "INFO";
    case RW_RUNTIME_WARN:
        return "WARN";
    case RW_RUNTIME_ERROR:
        return "ERROR";
    case RW_RUNTIME_FATAL:
        return "FATAL";
    }
    return "INFO";
}

size_t rw_runtime_log_format(char *buf, size_t cap, int64_t epoch_ms, const char *request_id,
                             rw_runtime_level_t level, const char *message)
{
    time_t secs = (time_t)(epoch_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\t%s\t%s\t", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(epoch_ms % 1000), request_id ? request_id : "",
                     rw_runtime_level_name(level));
    size_t len = n < 0 ? 0 : (size_t)n;
    if (len > cap - 2)
        len = cap - 2;
    /* One message is one log event: Lambda's runtimes turn the newlines inside
     * it into carriage returns so that line-based collectors keep it whole. A
     * trailing newline is dropped rather than turned into "\r". */
    size_t mlen = message ? strlen(message) : 0;
    while (mlen > 0 && message[mlen - 1] == '\n')
        mlen--;
    for (size_t i = 0; i < mlen && len < cap - 2; i++)
        buf[len++] = message[i] == '\n' ? '\r' : message[i];
    buf[len++] = '\n';
    buf[len] = '\0';
    return len;
}

char *rw_runtime_error_json(const char *type, const char *message, size_t *len)
{
    cJSON *doc = cJSON_CreateObject();
    char *text = NULL;
    if (doc == NULL)
        goto out;
    if (!cJSON_AddStringToObject(doc, "errorMessage", message ? message : "") ||
        !cJSON_AddStringToObject(doc, "errorType", type ? type : "Error") ||
        !cJSON_AddArrayToObject(doc, "stackTrace"))
        goto out;
    text = cJSON_PrintUnformatted(doc);
    if (text != NULL && len != NULL)
        *len = strlen(text);
out:
    cJSON_Delete(doc);
    return text;
}

char *rw_runtime_prelude(int status, const cJSON *headers, const cJSON *cookies, size_t *len)
{
    if ((headers != NULL && !cJSON_IsObject(headers)) ||
        (cookies != NULL && !cJSON_IsArray(cookies)))
        return NULL;
    cJSON *doc = cJSON_CreateObject();
    char *text = NULL, *out = NULL;
    if (doc == NULL || !cJSON_AddNumberToObject(doc, "statusCode", status))
        goto out;
    if (headers != NULL) {
        cJSON *copy = cJSON_Duplicate(headers, true);
        if (copy == NULL || !cJSON_AddItemToObject(doc, "headers", copy)) {
            cJSON_Delete(copy);
            goto out;
        }
    }
    if (cookies != NULL) {
        cJSON *copy = cJSON_Duplicate(cookies, true);
        if (copy == NULL || !cJSON_AddItemToObject(doc, "cookies", copy)) {
            cJSON_Delete(copy);
            goto out;
        }
    }
    text = cJSON_PrintUnformatted(doc);
    if (text == NULL)
        goto out;
    size_t n = strlen(text);
    out = malloc(n + 8);
    if (out == NULL)
        goto out;
    memcpy(out, text, n);
    memset(out + n, 0, 8); /* the delimiter between the prelude and the body */
    *len = n + 8;
out:
    free(text);
    cJSON_Delete(doc);
    return out;
}

char *rw_runtime_base64(const void *bytes, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = bytes;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < len ? (unsigned)p[i + 1] << 8 : 0);
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}
