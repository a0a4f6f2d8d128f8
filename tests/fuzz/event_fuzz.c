/* libFuzzer target for the proxy-event code: mostly the parser of the
 * functions' answers (rw_event_response_parse), and also the event builder fed
 * hostile request bytes. Any crash, leak or sanitizer report is a bug, and so
 * is a mapped answer that breaks an invariant the HTTP server relies on. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "event.h"

static void check(bool ok)
{
    if (!ok)
        abort();
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* First byte: bit 0 payload version, bit 1 HTTP API, bit 2 binary media types
 * on a REST API, bit 3 an Accept header, bit 7 the builder instead. */
static void fuzz_response(uint8_t mode, const uint8_t *data, size_t size)
{
    static const char *const types[] = {"image/*", "application/octet-stream"};
    rw_event_kv_t accept = {"Accept", 6, "image/png", 9};
    rw_event_route_t route = {0};
    rw_event_request_t rq = {0};
    rw_event_response_t res;
    char why[256];

    route.payload_version = (mode & 1) ? RW_EVENT_V2 : RW_EVENT_V1;
    route.http_api = (mode & 2) != 0;
    if (mode & 4) {
        route.binary_media_types = types;
        route.n_binary_media_types = 2;
    }
    if (mode & 8) {
        rq.headers = &accept;
        rq.n_headers = 1;
    }
    int err =
        rw_event_response_parse(&route, &rq, (const char *)data, size, &res, why, sizeof(why));
    check(memchr(why, '\0', sizeof(why)) != NULL);
    if (err != 0) {
        check(res.headers == NULL && res.body == NULL && res.n_headers == 0);
        return;
    }
    check(res.status >= 100 && res.status <= 599);
    check(res.body != NULL && res.body[res.body_len] == '\0');
    for (size_t i = 0; i < res.n_headers; i++) {
        const rw_event_kv_t *h = &res.headers[i];
        check(h->name_len > 0 && h->name[h->name_len] == '\0');
        check(h->value[h->value_len] == '\0');
        for (size_t k = 0; k < h->name_len; k++)
            check(is_tchar((unsigned char)h->name[k]));
        for (size_t k = 0; k < h->value_len; k++) {
            unsigned char c = (unsigned char)h->value[k];
            check(c != '\r' && c != '\n' && c != 0);
        }
    }
    rw_event_response_free(&res);
}

/* The builder: the input is cut at NUL bytes into method, target, body and
 * header name/value pairs; the event must always be valid JSON. */
static void fuzz_build(uint8_t mode, const uint8_t *data, size_t size)
{
    const char *parts[40];
    size_t lens[40], n = 0, start = 0;
    rw_event_kv_t headers[16];
    rw_event_route_t route = {0};
    rw_event_request_t rq = {0};
    char *json = NULL;
    size_t len = 0;

    for (size_t i = 0; i <= size && n < 40; i++) {
        if (i == size || data[i] == 0) {
            parts[n] = (const char *)data + start;
            lens[n++] = i - start;
            start = i + 1;
        }
    }
    if (n < 3)
        return;
    route.payload_version = (mode & 1) ? RW_EVENT_V2 : RW_EVENT_V1;
    route.http_api = (mode & 2) != 0;
    route.stage_prefix_len = mode & 8;
    rq.method = "POST";
    rq.raw_path = parts[0];
    rq.raw_path_len = lens[0];
    const char *q = memchr(parts[0], '?', lens[0]);
    if (q) {
        rq.raw_path_len = (size_t)(q - parts[0]);
        rq.raw_query = q + 1;
        rq.raw_query_len = lens[0] - rq.raw_path_len - 1;
    }
    rq.body = parts[1];
    rq.body_len = lens[1];
    for (size_t i = 2; i + 1 < n && rq.n_headers < 16; i += 2) {
        headers[rq.n_headers].name = parts[i];
        headers[rq.n_headers].name_len = lens[i];
        headers[rq.n_headers].value = parts[i + 1];
        headers[rq.n_headers].value_len = lens[i + 1];
        rq.n_headers++;
    }
    rq.headers = headers;
    rq.source_ip = "192.0.2.1";
    rq.request_id = "fuzz";
    if (mode & 4) {
        rq.forwarded_proto = "https";
        rq.forwarded_port = 443;
        rq.trace_id = "Root=1-00000000-000000000000000000000000";
    }
    check(rw_event_build(&route, &rq, &json, &len) == 0);
    cJSON *parsed = cJSON_ParseWithLength(json, len);
    check(parsed != NULL);
    cJSON_Delete(parsed);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 0x80)
        fuzz_build(data[0], data + 1, size - 1);
    else
        fuzz_response(data[0], data + 1, size - 1);
    return 0;
}
