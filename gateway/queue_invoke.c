/* The queue's invoker for the environment manager: runs a delivery as an
 * invocation of its function and turns the invocation's status into the
 * delivery's outcome (Lambda's rules for asynchronous invocations). */
#include "functions.h"
#include "queue.h"

#include "reelway/error.h"

static void on_invoke_done(rw_invoke_t *inv, const rw_invoke_result_t *res, void *arg)
{
    rw_queue_delivery_t *d = arg;
    switch (res->status) {
    case RW_INVOKE_OK:
        rw_queue_delivery_done(d, RW_QUEUE_OK, NULL, 0);
        break;
    case RW_INVOKE_CANCELLED:
    case RW_INVOKE_SHUTDOWN:
        /* Not the function's failure: the message waits for the next consumer. */
        rw_queue_delivery_done(d, RW_QUEUE_RELEASE, NULL, 0);
        break;
    default:
        /* Function errors, timeouts, crashes, init errors, oversized responses
         * all count as a failed attempt; the payload is the error JSON. */
        rw_queue_delivery_done(d, RW_QUEUE_FAILED, res->payload, res->len);
        break;
    }
}

int rw_queue_invoke_function(void *fnmgr, rw_queue_delivery_t *d)
{
    rw_fnmgr_t *m = fnmgr;
    int fn = rw_fnmgr_find(m, d->function);
    if (fn < 0)
        return RW_ENOTFOUND;
    /* The message id is the request id: the same for every retry, as on Lambda. */
    rw_invoke_opts_t opts = {.request_id = d->id, .trace_id = d->trace_id};
    static const rw_invoke_cbs_t cbs = {.done = on_invoke_done};
    return rw_fnmgr_invoke(m, fn, d->payload, d->len, &opts, &cbs, d, NULL);
}
