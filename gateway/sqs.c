/* SQS queues: the batch invoker of the queues' subscriptions (Lambda's SQS
 * event, ReportBatchItemFailures) and the admin API that sends messages
 *   POST /_/admin/queues/{QueueName}/messages[?DelaySeconds=N]  body = the message
 *   -> 200 {"MessageId": "...", "MD5OfMessageBody": "..."} */
#include "internal.h"
#include "queue.h"
#include "template.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_PREFIX "/_/admin/queues/"
#define ADMIN_SUFFIX "/messages"
/* What one record may add to the event beyond its escaped body (ids, ARN,
 * attributes): budgeted so that a batch stays under the 6 MB invoke limit. */
#define RECORD_OVERHEAD 2048

/* ---- the subscriptions' batch invoker ------------------------------------------------- */

/* The subscription of function to queue ("sqs:NAME"), or NULL. */
static const rw_tpl_subscription_t *subscription(const rw_template_t *tpl, const char *function,
                                                 const char *queue, const rw_tpl_queue_t **q)
{
    size_t plen = strlen(RW_QUEUE_SQS_PREFIX);
    if (!queue || strncmp(queue, RW_QUEUE_SQS_PREFIX, plen) != 0)
        return NULL;
    for (size_t i = 0; i < tpl->subscription_count; i++) {
        const rw_tpl_subscription_t *s = &tpl->subscriptions[i];
        const rw_tpl_queue_t *tq = &tpl->queues[s->queue];
        if (!strcmp(tpl->functions[s->function].name, function) &&
            !strcmp(tq->queue_name, queue + plen)) {
            *q = tq;
            return s;
        }
    }
    return NULL;
}

static void md5_hex(const char *data, size_t len, char out[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(data, len, md, &n, EVP_md5(), NULL))
        n = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < n && i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void add_ms_string(cJSON *o, const char *key, int64_t ms)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)ms);
    cJSON_AddStringToObject(o, key, buf);
}

/* One record of Lambda's SQS event. */
static cJSON *record_of(const rw_gateway_t *gw, const rw_tpl_queue_t *q,
                        const rw_queue_delivery_t *d)
{
    const rw_template_t *tpl = gw->node.tpl;
    char md5[33], count[16];
    md5_hex(d->payload, d->len, md5);
    snprintf(count, sizeof count, "%d", d->attempt);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "messageId", d->message_id);
    cJSON_AddStringToObject(r, "receiptHandle", d->receipt);
    cJSON_AddStringToObject(r, "body", d->payload);
    cJSON *a = cJSON_AddObjectToObject(r, "attributes");
    cJSON_AddStringToObject(a, "ApproximateReceiveCount", count);
    add_ms_string(a, "SentTimestamp", d->created_at_ms);
    cJSON_AddStringToObject(a, "SenderId", tpl->account_id);
    add_ms_string(a, "ApproximateFirstReceiveTimestamp", d->first_received_ms);
    cJSON *attrs = d->attributes ? cJSON_Parse(d->attributes) : NULL;
    if (!cJSON_IsObject(attrs)) {
        cJSON_Delete(attrs);
        attrs = cJSON_CreateObject();
    }
    cJSON_AddItemToObject(r, "messageAttributes", attrs);
    cJSON_AddStringToObject(r, "md5OfBody", md5);
    cJSON_AddStringToObject(r, "eventSource", "aws:sqs");
    cJSON_AddStringToObject(r, "eventSourceARN", q->arn);
    cJSON_AddStringToObject(r, "awsRegion", tpl->region);
    return r;
}

typedef struct batch_call_s {
    rw_queue_delivery_t **ds;
    size_t n;
    bool report; /* ReportBatchItemFailures */
} batch_call_t;

static void end_all(batch_call_t *bc, rw_queue_outcome_t outcome, const char *error, size_t len)
{
    for (size_t i = 0; i < bc->n; i++)
        rw_queue_delivery_done(bc->ds[i], outcome, error, len);
}

/* Lambda's rules for a ReportBatchItemFailures response: nothing, null, no
 * or an empty batchItemFailures is a success of all; listed messages failed;
 * anything malformed (not JSON, an itemIdentifier missing, empty or not of
 * this batch) fails the whole batch. Returns false for the last case, else
 * fills failed[i]. */
static bool item_failures(const batch_call_t *bc, const char *payload, size_t len, bool *failed)
{
    size_t i = 0;
    while (i < len && (payload[i] == ' ' || payload[i] == '\n' || payload[i] == '\r' ||
                       payload[i] == '\t'))
        i++;
    if (i == len)
        return true;
    cJSON *res = cJSON_ParseWithLength(payload, len);
    if (!res)
        return false;
    bool ok = true;
    const cJSON *list =
        cJSON_IsObject(res) ? cJSON_GetObjectItemCaseSensitive(res, "batchItemFailures") : NULL;
    if (list && !cJSON_IsNull(list)) {
        if (!cJSON_IsArray(list))
            ok = false;
        const cJSON *item;
        cJSON_ArrayForEach(item, list)
        {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "itemIdentifier");
            bool known = false;
            for (size_t k = 0; cJSON_IsString(id) && id->valuestring[0] && k < bc->n; k++)
                if (!strcmp(bc->ds[k]->message_id, id->valuestring)) {
                    failed[k] = known = true;
                }
            ok &= known;
        }
    }
    cJSON_Delete(res);
    return ok;
}

static void on_batch_done(rw_invoke_t *inv, const rw_invoke_result_t *res, void *arg)
{
    batch_call_t *bc = arg;
    switch (res->status) {
    case RW_INVOKE_OK:
        if (!bc->report) {
            end_all(bc, RW_QUEUE_OK, NULL, 0);
            break;
        }
        bool *failed = calloc(bc->n, sizeof *failed);
        if (!failed) {
            /* Out of memory: nothing is recorded; the leases end and the
             * batch comes back, as after a crash. */
            end_all(bc, RW_QUEUE_RELEASE, NULL, 0);
            break;
        }
        if (!item_failures(bc, res->payload, res->len, failed)) {
            static const char bad[] = "{\"errorType\":\"Reelway.InvalidBatchItemFailures\","
                                      "\"errorMessage\":\"the function's batchItemFailures "
                                      "response is not valid: the whole batch failed\"}";
            end_all(bc, RW_QUEUE_FAILED, bad, sizeof bad - 1);
        } else {
            static const char item[] = "{\"errorType\":\"Reelway.BatchItemFailure\","
                                       "\"errorMessage\":\"the function reported this message "
                                       "in batchItemFailures\"}";
            for (size_t i = 0; i < bc->n; i++)
                rw_queue_delivery_done(bc->ds[i], failed[i] ? RW_QUEUE_FAILED : RW_QUEUE_OK,
                                       failed[i] ? item : NULL, failed[i] ? sizeof item - 1 : 0);
        }
        free(failed);
        break;
    case RW_INVOKE_CANCELLED:
    case RW_INVOKE_SHUTDOWN:
        end_all(bc, RW_QUEUE_RELEASE, NULL, 0);
        break;
    default:
        /* A function error, timeout or crash fails the whole batch, as on Lambda. */
        end_all(bc, RW_QUEUE_FAILED, res->payload, res->len);
        break;
    }
    free(bc->ds);
    free(bc);
}

int rw__sqs_invoke_batch(void *arg, const char *function, rw_queue_delivery_t *const *ds,
                         size_t n)
{
    rw_gateway_t *gw = arg;
    const rw_tpl_queue_t *q = NULL;
    const rw_tpl_subscription_t *sub = subscription(gw->node.tpl, function, ds[0]->queue, &q);
    int fn = gw->fnmgr ? rw_fnmgr_find(gw->fnmgr, function) : -1;
    if (!sub || fn < 0)
        return RW_ENOTFOUND;
    batch_call_t *bc = calloc(1, sizeof *bc);
    cJSON *event = cJSON_CreateObject();
    cJSON *records = cJSON_AddArrayToObject(event, "Records");
    if (!bc || !records || !(bc->ds = calloc(n, sizeof *bc->ds))) {
        free(bc);
        cJSON_Delete(event);
        return UV_ENOMEM;
    }
    bc->report = sub->report_batch_item_failures;
    /* The batch's bodies were bounded when it was gathered; escaping can
     * still grow a body six-fold, so a record that would pass the limit
     * ends the batch here and the rest go back for the next one. */
    size_t size = 16, kept = 0;
    for (size_t i = 0; i < n; i++) {
        size_t body = 0;
        for (size_t k = 0; k < ds[i]->len; k++) {
            unsigned char ch = (unsigned char)ds[i]->payload[k];
            body += ch < 0x20 ? 6 : ch == '"' || ch == '\\' ? 2 : 1;
        }
        if (kept > 0 && size + body + RECORD_OVERHEAD > RW_LAMBDA_PAYLOAD_MAX)
            break;
        size += body + RECORD_OVERHEAD;
        cJSON_AddItemToArray(records, record_of(gw, q, ds[i]));
        bc->ds[kept++] = ds[i];
    }
    bc->n = kept;
    char *json = cJSON_PrintUnformatted(event);
    cJSON_Delete(event);
    if (!json) {
        free(bc->ds);
        free(bc);
        return UV_ENOMEM;
    }
    static const rw_invoke_cbs_t cbs = {.done = on_batch_done};
    rw_invoke_opts_t opts = {0}; /* each invocation of a batch has a request id of its own */
    int rc = rw_fnmgr_invoke(gw->fnmgr, fn, json, strlen(json), &opts, &cbs, bc, NULL);
    cJSON_free(json);
    if (rc != 0) {
        free(bc->ds);
        free(bc);
        return rc;
    }
    /* What did not fit goes back unrun, to come in the next batch. */
    for (size_t i = kept; i < n; i++)
        rw_queue_delivery_done(ds[i], RW_QUEUE_RELEASE, NULL, 0);
    return 0;
}

/* ---- the admin API: sending messages --------------------------------------------------- */

bool rw__sqs_admin_match(const rw_http_req_t *req)
{
    size_t pl = strlen(ADMIN_PREFIX), sl = strlen(ADMIN_SUFFIX);
    return req->path_len > pl + sl && !memcmp(req->path, ADMIN_PREFIX, pl) &&
           !memcmp(req->path + req->path_len - sl, ADMIN_SUFFIX, sl);
}

typedef struct send_s {
    rw_gateway_t *gw;
    rw_http_req_t *req;
    const rw_tpl_queue_t *q;
    long delay_s;
    char md5[33];
} send_t;

static void on_sent(void *arg, int status, const char *id, const char *why)
{
    send_t *s = arg;
    rw_http_req_t *req = s->req;
    if (status == 0 && s->gw->consumer)
        rw_queue_consumer_kick(s->gw->consumer);
    if (!rw_http_req_alive(req)) {
        rw_http_res_end(req, NULL, 0);
    } else if (status != 0) {
        fprintf(stderr, "reelway: queue %s: cannot send a message: %s\n", s->q->queue_name,
                why ? why : rw_strerror(status));
        rw_http_respond_error(req, 503, "Service Unavailable", "the message was not stored",
                              NULL, 0);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "MessageId", id);
        cJSON_AddStringToObject(o, "MD5OfMessageBody", s->md5);
        rw__admin_respond_json(req, 200, o);
    }
    free(s);
}

/* SQS accepts #x9 #xA #xD, #x20 to #xD7FF, #xE000 to #xFFFD, #x10000 to
 * #x10FFFF in a body: valid UTF-8 (which excludes surrogates) without the
 * other control characters, U+FFFE and U+FFFF. */
static bool sqs_body_ok(const char *s, size_t len)
{
    if (!bson_utf8_validate(s, len, false))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return false;
        if (c == 0xef && i + 2 < len && (unsigned char)s[i + 1] == 0xbf &&
            ((unsigned char)s[i + 2] == 0xbe || (unsigned char)s[i + 2] == 0xbf))
            return false;
    }
    return true;
}

static void on_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    send_t *s = req->data;
    req->data = NULL;
    if (status != 0) {
        int code = status == RW_ELIMIT ? 413 : 400;
        char why[128];
        snprintf(why, sizeof why, "the body is over the queue's MaximumMessageSize (%d bytes)",
                 s->q->max_message_bytes);
        rw_http_respond_error(req, code, code == 413 ? "Request Too Long" : "Bad Request",
                              status == RW_ELIMIT ? why : rw_strerror(status), NULL, 0);
        free(s);
        return;
    }
    if (len == 0 || !sqs_body_ok(body, len)) {
        rw_http_respond_error(req, 400, "Bad Request",
                              len ? "InvalidMessageContents: the body must be UTF-8 text "
                                    "without control characters other than tab, LF and CR"
                                  : "MissingParameter: the message body is empty",
                              NULL, 0);
        free(s);
        return;
    }
    md5_hex(body, len, s->md5);
    char queue[160];
    snprintf(queue, sizeof queue, RW_QUEUE_SQS_PREFIX "%s", s->q->queue_name);
    rw_queue_msg_t msg = {.queue = queue,
                          .payload = body,
                          .len = len,
                          .max_age_ms = (int64_t)s->q->retention_s * 1000,
                          .delay_ms = (int64_t)s->delay_s * 1000};
    int rc = s->gw->queue ? rw_queue_enqueue(s->gw->queue, &msg, on_sent, s) : UV_ENOSYS;
    if (rc != 0) {
        rw_http_respond_error(req, rc == RW_EPARSE ? 400 : 503,
                              rc == RW_EPARSE ? "Bad Request" : "Service Unavailable",
                              rw_strerror(rc), NULL, 0);
        free(s);
    }
}

/* DelaySeconds from the query string, else the queue's own. */
static bool delay_of(const rw_http_req_t *req, const rw_tpl_queue_t *q, long *out)
{
    *out = q->delay_s;
    const char *p = req->query;
    while (p && *p) {
        size_t n = strcspn(p, "&");
        if (n > 13 && !strncmp(p, "DelaySeconds=", 13)) {
            char buf[16];
            size_t vl = n - 13;
            if (vl == 0 || vl >= sizeof buf)
                return false;
            memcpy(buf, p + 13, vl);
            buf[vl] = '\0';
            char *end;
            long v = strtol(buf, &end, 10);
            if (*end || v < 0 || v > 900)
                return false;
            *out = v;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return true;
}

void rw__sqs_admin(rw_gateway_t *gw, rw_http_req_t *req)
{
    gw_req_t *ctx = rw__app_ctx(gw, req, RW_APP_RID_INVOKE);
    ctx->route_key = "POST /_/admin/queues/{QueueName}/messages";
    if (!rw__admin_authorized(gw, req))
        return;
    if (strcmp(req->method, "POST") != 0) {
        rw_http_header_t allow = {"Allow", 5, "POST", 4};
        rw_http_respond_error(req, 405, "Method Not Allowed", NULL, &allow, 1);
        return;
    }
    const char *name = req->path + strlen(ADMIN_PREFIX);
    size_t name_len = req->path_len - strlen(ADMIN_PREFIX) - strlen(ADMIN_SUFFIX);
    const rw_template_t *tpl = gw->node.tpl;
    const rw_tpl_queue_t *q = NULL;
    for (size_t i = 0; tpl && i < tpl->queue_count && !q; i++)
        if (strlen(tpl->queues[i].queue_name) == name_len &&
            !memcmp(tpl->queues[i].queue_name, name, name_len))
            q = &tpl->queues[i];
    if (!q) {
        rw_http_respond_error(req, 404, "Not Found",
                              "AWS.SimpleQueueService.NonExistentQueue: no queue of the template "
                              "has this QueueName",
                              NULL, 0);
        return;
    }
    send_t *s = calloc(1, sizeof *s);
    if (!s) {
        rw_http_respond_error(req, 503, "Service Unavailable", "out of memory", NULL, 0);
        return;
    }
    s->gw = gw;
    s->req = req;
    s->q = q;
    if (!delay_of(req, q, &s->delay_s)) {
        free(s);
        rw_http_respond_error(req, 400, "Bad Request",
                              "InvalidParameterValue: DelaySeconds must be 0 to 900", NULL, 0);
        return;
    }
    req->data = s;
    if (rw_http_req_read_body(req, (size_t)q->max_message_bytes, on_body) != 0) {
        /* Refused before reading: its Content-Length is over the limit. */
        char why[128];
        snprintf(why, sizeof why, "the body is over the queue's MaximumMessageSize (%d bytes)",
                 q->max_message_bytes);
        req->data = NULL;
        free(s);
        rw_http_respond_error(req, 413, "Request Too Long", why, NULL, 0);
    }
}
