/* The event sources of functions other than APIs: bucket notifications (S3
 * events), queue subscriptions (SQS events) and schedules (rate and cron, as
 * EventBridge reads them), and the checks across them. */
#include "template_internal.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool streq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static void add_event_ref(ctx_t *c, int fn, const node_t *name, rw_tpl_event_kind_t kind, int index)
{
    rw_tpl_function_t *f = &c->tpl->functions[fn];
    rw_tpl_event_t *e = RW_TPL_PUSH(c->arena, f->events, f->event_count);
    e->name = rw__template_keep(c, name->str);
    e->kind = kind;
    e->api = -1;
    e->index = index;
    e->line = name->line;
    e->col = name->col;
}

static const node_t *event_props(ctx_t *c, const node_t *name, const node_t *event,
                                 const char *type)
{
    const node_t *props = rw__template_map_get(event, "Properties");
    if (!props) {
        rw__template_error(c, name, "%s event %s: Properties is required", type, name->str);
        return NULL;
    }
    return rw__template_get_map(c, props, "Properties") ? props : NULL;
}

/* ---- S3 ------------------------------------------------------------------------ */

static unsigned s3_event_bits(ctx_t *c, const node_t *at, const char *s)
{
    static const struct {
        const char *name;
        unsigned bits;
    } known[] = {{"s3:ObjectCreated:*", RW_TPL_S3_CREATED_ALL},
                 {"s3:ObjectCreated:Put", RW_TPL_S3_CREATED_PUT},
                 {"s3:ObjectCreated:Post", RW_TPL_S3_CREATED_POST},
                 {"s3:ObjectCreated:Copy", RW_TPL_S3_CREATED_COPY},
                 {"s3:ObjectCreated:CompleteMultipartUpload", RW_TPL_S3_CREATED_MULTIPART},
                 {"s3:ObjectRemoved:*", RW_TPL_S3_REMOVED_ALL},
                 {"s3:ObjectRemoved:Delete", RW_TPL_S3_REMOVED_DELETE},
                 {"s3:ObjectRemoved:DeleteMarkerCreated", RW_TPL_S3_REMOVED_MARKER}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (streq(s, known[i].name))
            return known[i].bits;
    if (strncmp(s, "s3:", 3) == 0 &&
        (strncmp(s + 3, "ObjectRestore:", 14) == 0 || strncmp(s + 3, "Replication:", 12) == 0 ||
         strncmp(s + 3, "LifecycleExpiration:", 20) == 0 ||
         strncmp(s + 3, "LifecycleTransition", 19) == 0 ||
         strncmp(s + 3, "ObjectTagging:", 14) == 0 || strncmp(s + 3, "ObjectAcl:", 10) == 0 ||
         strncmp(s + 3, "IntelligentTiering", 18) == 0 ||
         streq(s + 3, "ReducedRedundancyLostObject")))
        rw__template_error(c, at,
                           "Events: %.64s is not supported by reelway (s3:ObjectCreated:* "
                           "and s3:ObjectRemoved:* and their kinds)",
                           s);
    else
        rw__template_error(c, at, "Events: '%.64s' is not an S3 event type", s);
    return 0;
}

void rw__template_add_s3_event(ctx_t *c, int fn, const node_t *name, const node_t *event)
{
    static const char *const keys[] = {"Bucket", "Events", "Filter", NULL};
    static const char *const filter_keys[] = {"S3Key", NULL};
    static const char *const key_keys[] = {"Rules", NULL};
    static const char *const rule_keys[] = {"Name", "Value", NULL};
    static const char *const rule_names[] = {"prefix", "suffix", NULL};
    rw_template_t *t = c->tpl;
    const node_t *props = event_props(c, name, event, "S3");
    if (!props)
        return;
    rw__template_check_keys(c, props, "an S3 event", keys, NULL);
    const node_t *b = rw__template_require(c, props, "Bucket", "S3 event");
    const node_t *ev = rw__template_require(c, props, "Events", "S3 event");
    int bucket = b ? rw__template_resolve_ref(c, b, "Bucket", SYM_BUCKET) : -1;
    unsigned bits = 0;
    bool ok = bucket >= 0;
    char **names;
    size_t n;
    if (ev && rw__template_get_strs(c, ev, "Events", true, &names, &n)) {
        for (size_t i = 0; i < n; i++) {
            unsigned x = s3_event_bits(c, ev, names[i]);
            if (!x)
                ok = false;
            bits |= x;
        }
        if (n == 0) {
            rw__template_error(c, ev, "Events: give at least one S3 event type");
            ok = false;
        }
    } else {
        ok = false;
    }
    char *prefix = NULL, *suffix = NULL;
    const node_t *filter = rw__template_map_get(props, "Filter");
    if (filter && rw__template_get_map(c, filter, "Filter")) {
        rw__template_check_keys(c, filter, "Filter", filter_keys, NULL);
        const node_t *key = rw__template_require(c, filter, "S3Key", "Filter");
        if (key && rw__template_get_map(c, key, "S3Key")) {
            rw__template_check_keys(c, key, "S3Key", key_keys, NULL);
            const node_t *rules = rw__template_require(c, key, "Rules", "S3Key");
            if (rules && (rules->kind != RW__TPL_SEQ || rules->tag)) {
                rw__template_error(c, rules, "Rules: expected a list of {Name, Value}");
                ok = false;
            } else if (rules) {
                for (size_t i = 0; i < rules->count; i++) {
                    const node_t *r = rules->kids[i];
                    if (!rw__template_get_map(c, r, "Rules")) {
                        ok = false;
                        continue;
                    }
                    rw__template_check_keys(c, r, "a filter rule", rule_keys, NULL);
                    const node_t *rn = rw__template_require(c, r, "Name", "filter rule");
                    const node_t *rv = rw__template_require(c, r, "Value", "filter rule");
                    int which = rn ? rw__template_get_enum(c, rn, "Name", rule_names, true) : -1;
                    const char *value;
                    if (which < 0 || !rv || !rw__template_get_str(c, rv, "Value", &value)) {
                        ok = false;
                        continue;
                    }
                    if (strlen(value) > 1024) {
                        rw__template_error(c, rv, "Value: longer than 1024 bytes");
                        ok = false;
                        continue;
                    }
                    char **slot = which == 0 ? &prefix : &suffix;
                    if (*slot) {
                        rw__template_error(c, rn, "Rules: %s is given twice", rule_names[which]);
                        ok = false;
                        continue;
                    }
                    *slot = rw__template_keep(c, value);
                }
            }
        }
    }
    if (!ok)
        return;
    /* Nothing can create an object through reelway before the upload path
     * exists: a notification would never fire, and a template element that
     * silently does nothing is worse than a refusal. The model keeps it. */
    if (!c->params || !c->params->keep_unserved)
        rw__template_error(c, name,
                           "S3 event %s: bucket notifications arrive with the upload path: not "
                           "served yet",
                           name->str);
    rw_tpl_notification_t *no = RW_TPL_PUSH(c->arena, t->notifications, t->notification_count);
    no->bucket = bucket;
    no->function = fn;
    no->events = bits;
    no->prefix = prefix;
    no->suffix = suffix;
    no->event_name = rw__template_keep(c, name->str);
    no->line = name->line;
    no->col = name->col;
    add_event_ref(c, fn, name, RW_TPL_EVENT_S3, (int)t->notification_count - 1);
}

/* ---- SQS ------------------------------------------------------------------------ */

void rw__template_add_sqs_event(ctx_t *c, int fn, const node_t *name, const node_t *event)
{
    static const char *const keys[] = {
        "Queue", "BatchSize", "Enabled", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes",
        NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"FilterCriteria", "event filtering is not supported"},
        {"ScalingConfig", "the function's ReservedConcurrentExecutions bounds its pollers"},
        {"KmsKeyArn", "KMS is not supported"},
        {"MetricsConfig", "metrics are the gateway's"},
        {"ProvisionedPollerConfig", "does not apply"},
        {NULL, NULL}};
    static const char *const response_types[] = {"ReportBatchItemFailures", NULL};
    rw_template_t *t = c->tpl;
    const node_t *props = event_props(c, name, event, "SQS");
    if (!props)
        return;
    rw__template_check_keys(c, props, "an SQS event", keys, unsupported);
    const node_t *q = rw__template_require(c, props, "Queue", "SQS event");
    int queue = q ? rw__template_resolve_ref(c, q, "Queue", SYM_QUEUE) : -1;
    rw_tpl_subscription_t sub = {.queue = queue, .function = fn, .batch_size = 10, .enabled = true};
    const node_t *v;
    long l;
    bool ok = queue >= 0;
    const node_t *bs = rw__template_map_get(props, "BatchSize");
    if (bs) {
        if (rw__template_get_int(c, bs, "BatchSize", 1, 10000, &l))
            sub.batch_size = (int)l;
        else
            ok = false;
    }
    if ((v = rw__template_map_get(props, "MaximumBatchingWindowInSeconds"))) {
        if (rw__template_get_int(c, v, "MaximumBatchingWindowInSeconds", 0, 300, &l))
            sub.batch_window_s = (int)l;
        else
            ok = false;
    }
    if (sub.batch_size > 10 && sub.batch_window_s < 1)
        rw__template_error(c, bs,
                           "BatchSize: more than 10 needs MaximumBatchingWindowInSeconds "
                           "of 1 or more (as in Lambda)");
    if ((v = rw__template_map_get(props, "Enabled")))
        rw__template_get_bool(c, v, "Enabled", &sub.enabled);
    if ((v = rw__template_map_get(props, "FunctionResponseTypes"))) {
        char **types;
        size_t n;
        if (rw__template_get_strs(c, v, "FunctionResponseTypes", false, &types, &n))
            for (size_t i = 0; i < n; i++) {
                if (streq(types[i], response_types[0]))
                    sub.report_batch_item_failures = true;
                else
                    rw__template_error(c, v,
                                       "FunctionResponseTypes: '%.64s' is not "
                                       "ReportBatchItemFailures",
                                       types[i]);
            }
    }
    if (!ok)
        return;
    sub.event_name = rw__template_keep(c, name->str);
    sub.line = name->line;
    sub.col = name->col;
    *RW_TPL_PUSH(c->arena, t->subscriptions, t->subscription_count) = sub;
    add_event_ref(c, fn, name, RW_TPL_EVENT_SQS, (int)t->subscription_count - 1);
}

/* ---- Schedule -------------------------------------------------------------------- */

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL",
                                          "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const day_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

typedef struct cron_field_s {
    const char *name;
    long min, max;
    const char *const *names; /* names for min, min+1, ... */
} cron_field_t;

static const cron_field_t cron_fields[6] = {
    {"minutes", 0, 59, NULL},      {"hours", 0, 23, NULL},           {"day-of-month", 1, 31, NULL},
    {"month", 1, 12, month_names}, {"day-of-week", 1, 7, day_names}, {"year", 1970, 2199, NULL}};

static bool cron_value(const cron_field_t *f, const char *s, size_t n, long *out)
{
    if (n == 0)
        return false;
    if (f->names) {
        for (long i = 0; f->names[i]; i++)
            if (n == 3 && strncasecmp(s, f->names[i], 3) == 0) {
                *out = f->min + i;
                return true;
            }
    }
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > 100000)
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < f->min || v > f->max)
        return false;
    *out = v;
    return true;
}

/* One comma-separated item of a cron field. */
static bool cron_item(int field, const char *s, size_t n)
{
    const cron_field_t *f = &cron_fields[field];
    long a, b;
    if (field == 2) { /* day-of-month: L, LW, nW */
        if ((n == 1 && s[0] == 'L') || (n == 2 && strncmp(s, "LW", 2) == 0))
            return true;
        if (n >= 2 && s[n - 1] == 'W')
            return cron_value(f, s, n - 1, &a);
    }
    if (field == 4) { /* day-of-week: L, nL, n#k */
        if (n == 1 && s[0] == 'L')
            return true;
        if (n >= 2 && s[n - 1] == 'L')
            return cron_value(f, s, n - 1, &a);
        const char *hash = memchr(s, '#', n);
        if (hash) {
            size_t k = n - (size_t)(hash - s) - 1;
            return cron_value(f, s, (size_t)(hash - s), &a) && k == 1 && hash[1] >= '1' &&
                   hash[1] <= '5';
        }
    }
    const char *slash = memchr(s, '/', n);
    size_t base = slash ? (size_t)(slash - s) : n;
    if (slash) {
        size_t sl = n - base - 1;
        long step = 0;
        if (sl == 0 || sl > 5)
            return false;
        for (size_t i = 0; i < sl; i++) {
            if (slash[1 + i] < '0' || slash[1 + i] > '9')
                return false;
            step = step * 10 + (slash[1 + i] - '0');
        }
        if (step < 1 || step > f->max)
            return false;
    }
    if (base == 1 && s[0] == '*')
        return true;
    const char *dash = memchr(s, '-', base);
    if (dash)
        return cron_value(f, s, (size_t)(dash - s), &a) &&
               cron_value(f, dash + 1, base - (size_t)(dash - s) - 1, &b) && a <= b;
    return cron_value(f, s, base, &a);
}

static bool check_cron(ctx_t *c, const node_t *at, const char *expr, char *fields_out[6])
{
    char *copy = rw__template_strdup(c->scratch, expr);
    char *fields[7];
    int nf = 0;
    for (char *p = copy; *p && nf < 7;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        fields[nf++] = p;
        while (*p && *p != ' ')
            p++;
        if (*p)
            *p++ = '\0';
    }
    if (nf != 6) {
        rw__template_error(c, at,
                           "Schedule: cron takes 6 fields (minutes hours day-of-month month "
                           "day-of-week year), not %d",
                           nf);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < 6; i++) {
        const char *fs = fields[i];
        if (streq(fs, "?")) {
            if (i != 2 && i != 4) {
                rw__template_error(c, at, "Schedule: ? is only for day-of-month or day-of-week");
                ok = false;
            }
            continue;
        }
        for (const char *p = fs; *p;) {
            size_t n = strcspn(p, ",");
            if (!cron_item(i, p, n)) {
                rw__template_error(c, at, "Schedule: '%.*s' is not a valid %s", (int)n, p,
                                   cron_fields[i].name);
                ok = false;
                break;
            }
            p += n;
            if (*p == ',')
                p++;
        }
    }
    bool dom_q = streq(fields[2], "?"), dow_q = streq(fields[4], "?");
    if (dom_q == dow_q) {
        rw__template_error(c, at,
                           "Schedule: exactly one of day-of-month and day-of-week must be "
                           "?");
        ok = false;
    }
    if (ok)
        for (int i = 0; i < 6; i++)
            fields_out[i] = rw__template_keep(c, fields[i]);
    return ok;
}

static bool check_rate(ctx_t *c, const node_t *at, const char *body, long *seconds)
{
    static const struct {
        const char *one, *many;
        long seconds;
    } units[] = {{"minute", "minutes", 60}, {"hour", "hours", 3600}, {"day", "days", 86400}};
    char *end;
    if (body[0] < '1' || body[0] > '9') {
        rw__template_error(c, at,
                           "Schedule: rate takes a positive whole number, e.g. rate(5 "
                           "minutes)");
        return false;
    }
    long n = strtol(body, &end, 10);
    if (*end != ' ' || n <= 0 || n > 1000000) {
        rw__template_error(c, at, "Schedule: rate takes VALUE UNIT, e.g. rate(5 minutes)");
        return false;
    }
    const char *unit = end + 1;
    for (size_t i = 0; i < 3; i++) {
        if (streq(unit, units[i].one) || streq(unit, units[i].many)) {
            if ((n == 1) != streq(unit, units[i].one)) {
                rw__template_error(c, at,
                                   "Schedule: write rate(1 %s) and rate(%ld %s) (the unit "
                                   "is singular for 1 only)",
                                   units[i].one, n == 1 ? 2 : n, units[i].many);
                return false;
            }
            *seconds = n * units[i].seconds;
            return true;
        }
    }
    rw__template_error(c, at, "Schedule: rate unit '%.16s' is not minute(s), hour(s) or day(s)",
                       unit);
    return false;
}

void rw__template_add_schedule_event(ctx_t *c, int fn, const node_t *name, const node_t *event)
{
    static const char *const keys[] = {"Schedule", "Input",       "Enabled", "State",
                                       "Name",     "Description", NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"DeadLetterConfig", "failed scheduled invocations follow the function's "
                             "EventInvokeConfig and DeadLetterQueue"},
        {"RetryPolicy", "retries follow the function's EventInvokeConfig"},
        {"Target", "the target is the function"},
        {"RoleArn", "IAM is not modeled"},
        {NULL, NULL}};
    static const char *const states[] = {"ENABLED", "DISABLED", NULL};
    rw_template_t *t = c->tpl;
    const node_t *props = event_props(c, name, event, "Schedule");
    if (!props)
        return;
    rw__template_check_keys(c, props, "a Schedule event", keys, unsupported);
    rw_tpl_schedule_t sc = {.function = fn, .enabled = true};
    bool ok = true;
    const node_t *ex = rw__template_require(c, props, "Schedule", "Schedule event");
    const char *s;
    if (ex && rw__template_get_str(c, ex, "Schedule", &s)) {
        size_t n = strlen(s);
        if (n > 256) {
            rw__template_error(c, ex, "Schedule: longer than 256 bytes");
            ok = false;
        } else if (strncmp(s, "rate(", 5) == 0 && s[n - 1] == ')') {
            char *body = rw__template_strndup(c->scratch, s + 5, n - 6);
            sc.is_rate = true;
            ok = check_rate(c, ex, body, &sc.rate_s) && ok;
        } else if (strncmp(s, "cron(", 5) == 0 && s[n - 1] == ')') {
            char *body = rw__template_strndup(c->scratch, s + 5, n - 6);
            ok = check_cron(c, ex, body, sc.cron) && ok;
        } else {
            rw__template_error(c, ex, "Schedule: '%.64s' is not rate(...) or cron(...)", s);
            ok = false;
        }
        sc.expression = rw__template_keep(c, s);
    } else {
        ok = false;
    }
    const node_t *v;
    if ((v = rw__template_map_get(props, "Input")) && rw__template_get_str(c, v, "Input", &s)) {
        cJSON *j = strlen(s) <= 8192 ? cJSON_Parse(s) : NULL;
        if (!j) {
            rw__template_error(c, v, "Input: not a JSON text of at most 8192 bytes");
            ok = false;
        } else {
            sc.input = rw__template_keep(c, s);
            cJSON_Delete(j);
        }
    }
    const node_t *en = rw__template_map_get(props, "Enabled");
    const node_t *st = rw__template_map_get(props, "State");
    if (en && st)
        rw__template_error(c, st, "State and Enabled exclude each other");
    else if (en)
        rw__template_get_bool(c, en, "Enabled", &sc.enabled);
    else if (st) {
        int k = rw__template_get_enum(c, st, "State", states, false);
        sc.enabled = k != 1;
    }
    if ((v = rw__template_map_get(props, "Description")) &&
        rw__template_get_str(c, v, "Description", &s))
        sc.description = rw__template_keep(c, s);
    if ((v = rw__template_map_get(props, "Name")) && rw__template_get_str(c, v, "Name", &s)) {
        size_t n = strlen(s);
        if (n == 0 || n > 64 ||
            strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n) {
            rw__template_error(c, v, "Name: '%.64s' must be 1 to 64 of A-Z a-z 0-9 . _ -", s);
            ok = false;
        } else {
            sc.name = rw__template_keep(c, s);
        }
    }
    if (!ok)
        return;
    if (!sc.name)
        sc.name = rw__template_printf(c->arena, "%s%s", t->functions[fn].name, name->str);
    sc.event_name = rw__template_keep(c, name->str);
    sc.line = name->line;
    sc.col = name->col;
    *RW_TPL_PUSH(c->arena, t->schedules, t->schedule_count) = sc;
    add_event_ref(c, fn, name, RW_TPL_EVENT_SCHEDULE, (int)t->schedule_count - 1);
}

/* ---- checks across event sources ------------------------------------------------------ */

static bool overlaps(const char *a, const char *b, bool suffix)
{
    if (!a || !b)
        return true;
    size_t la = strlen(a), lb = strlen(b);
    size_t n = la < lb ? la : lb;
    return suffix ? memcmp(a + la - n, b + lb - n, n) == 0 : memcmp(a, b, n) == 0;
}

void rw__template_check_events(ctx_t *c)
{
    rw_template_t *t = c->tpl;
    /* S3 refuses two notifications whose event types, prefixes and suffixes
     * can all match the same object ("Configurations overlap"). */
    for (size_t i = 0; i < t->notification_count; i++) {
        const rw_tpl_notification_t *b = &t->notifications[i];
        for (size_t j = 0; j < i; j++) {
            const rw_tpl_notification_t *a = &t->notifications[j];
            if (a->bucket != b->bucket || !(a->events & b->events) ||
                !overlaps(a->prefix, b->prefix, false) || !overlaps(a->suffix, b->suffix, true))
                continue;
            rw__template_error_at(c, b->line, b->col,
                                  "S3 event %s overlaps event %s of function "
                                  "%s on bucket %s (same event types, "
                                  "overlapping prefix and suffix)",
                                  b->event_name, a->event_name, t->functions[a->function].name,
                                  t->buckets[b->bucket].name);
            break;
        }
    }
    /* Lambda refuses an SQS mapping whose queue would make a message visible
     * again while the function still works on it. */
    for (size_t i = 0; i < t->subscription_count; i++) {
        const rw_tpl_subscription_t *s = &t->subscriptions[i];
        const rw_tpl_queue_t *q = &t->queues[s->queue];
        const rw_tpl_function_t *f = &t->functions[s->function];
        if (q->visibility_timeout_s < f->timeout_s)
            rw__template_error_at(c, s->line, s->col,
                                  "SQS event %s: queue %s has "
                                  "VisibilityTimeout %d s, less than the "
                                  "function's Timeout %d s",
                                  s->event_name, q->name, q->visibility_timeout_s, f->timeout_s);
    }
    for (size_t i = 0; i < t->schedule_count; i++)
        for (size_t j = 0; j < i; j++)
            if (streq(t->schedules[i].name, t->schedules[j].name)) {
                rw__template_error_at(c, t->schedules[i].line, t->schedules[i].col,
                                      "schedule name %s is used twice (also at line %d)",
                                      t->schedules[i].name, t->schedules[j].line);
                break;
            }
    for (size_t i = 0; i < t->bucket_count; i++)
        for (size_t j = 0; j < i; j++)
            if (streq(t->buckets[i].bucket_name, t->buckets[j].bucket_name)) {
                rw__template_error_at(c, t->buckets[i].line, t->buckets[i].col,
                                      "bucket name %s is also the name of bucket %s",
                                      t->buckets[i].bucket_name, t->buckets[j].name);
                break;
            }
    for (size_t i = 0; i < t->queue_count; i++)
        for (size_t j = 0; j < i; j++)
            if (streq(t->queues[i].queue_name, t->queues[j].queue_name)) {
                rw__template_error_at(c, t->queues[i].line, t->queues[i].col,
                                      "queue name %s is also the name of queue %s",
                                      t->queues[i].queue_name, t->queues[j].name);
                break;
            }
}
