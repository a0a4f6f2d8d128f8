/* libFuzzer target for the template loader: any bytes either load into a model
 * or give diagnostics, never crash, never leak (ASan + LSan), and the result
 * is consistent (a model iff no diagnostic). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reelway/error.h"
#include "template.h"

/* Reads every string of the model so that ASan sees a dangling one. */
static size_t touch(const char *s)
{
    return s ? strlen(s) : 0;
}

static size_t walk(const rw_template_t *t)
{
    size_t n = touch(t->path) + touch(t->dir) + touch(t->description);
    for (size_t i = 0; i < t->param_count; i++)
        n += touch(t->params[i].name) + touch(t->params[i].value);
    for (size_t i = 0; i < t->function_count; i++) {
        const rw_tpl_function_t *f = &t->functions[i];
        n += touch(f->name) + touch(f->runtime) + touch(f->handler) + touch(f->code_path);
        for (size_t j = 0; j < f->env_count; j++)
            n += touch(f->env[j].key) + touch(f->env[j].value);
        for (size_t j = 0; j < f->event_count; j++) {
            n += touch(f->events[j].name);
            if (f->events[j].api >= (int)t->api_count)
                abort();
        }
    }
    for (size_t i = 0; i < t->api_count; i++) {
        const rw_tpl_api_t *a = &t->apis[i];
        n += touch(a->name) + touch(a->mount) + touch(a->stage) + touch(a->endpoint);
        for (size_t j = 0; j < a->authorizer_count; j++) {
            const rw_tpl_authorizer_t *au = &a->authorizers[j];
            n += touch(au->name);
            if (au->function >= (int)t->function_count)
                abort();
            for (size_t k = 0; k < au->issuer_count; k++)
                n += touch(au->issuers[k].issuer) + touch(au->issuers[k].jwks_uri);
        }
        for (size_t j = 0; j < a->route_count; j++) {
            const rw_tpl_route_t *r = &a->routes[j];
            n += touch(r->route_key) + touch(r->mock.body) + touch(r->http_proxy.uri);
            if (r->function >= (int)t->function_count || r->authorizer >= (int)a->authorizer_count)
                abort();
            if (r->integration == RW_TPL_INTEGRATION_FUNCTION && r->function < 0)
                abort();
        }
    }
    for (size_t i = 0; i < t->usage_plan_count; i++)
        for (size_t j = 0; j < t->usage_plans[i].api_count; j++)
            if (t->usage_plans[i].apis[j] < 0 || t->usage_plans[i].apis[j] >= (int)t->api_count)
                abort();
    for (size_t i = 0; i < t->output_count; i++)
        n += touch(t->outputs[i].value);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rw_diag_list_t diags;
    rw_diag_list_init(&diags);
    rw_template_t *tpl = NULL;
    int rc = rw_template_load_buffer((const char *)data, size, "fuzz.yaml", "/nonexistent", NULL,
                                     &tpl, &diags);
    if (rc == 0) {
        if (!tpl || diags.count)
            abort();
        walk(tpl);
    } else {
        if (tpl)
            abort();
        if (rc == RW_ECONFIG && diags.count == 0 && !diags.truncated)
            abort();
    }
    for (size_t i = 0; i < diags.count; i++)
        if (!diags.items[i].message || diags.items[i].line < 0)
            abort();
    rw_template_free(tpl);
    rw_diag_list_free(&diags);
    return 0;
}
