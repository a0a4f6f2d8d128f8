/* Asynchronous invocations: every Event invocation is written to the durable
 * queue in MongoDB before the caller hears 202. (The queue and its consumer
 * arrive with gateway/queue.c.) */
#include "internal.h"

#include "reelway/error.h"

int rw__gateway_enqueue(rw_gateway_t *gw, const char *function, const char *payload, size_t len,
                        const char *request_id,
                        void (*cb)(void *arg, int status, const char *request_id), void *arg)
{
    return UV_ENOSYS;
}
