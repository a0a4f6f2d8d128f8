/* Error codes and messages shared by all of reelway (the stream library is the
 * lowest layer, so the table lives here). */
#include "reelway/error.h"

#include <uv.h>

static const struct {
    int code;
    const char *name;
    const char *msg;
} rw_errors[] = {
    {RW_ELIMIT, "RW_ELIMIT", "size limit exceeded"},
    {RW_ELINE, "RW_ELINE", "line too long"},
    {RW_ECHUNK, "RW_ECHUNK", "malformed chunked encoding"},
    {RW_ETRUNC, "RW_ETRUNC", "input truncated"},
    {RW_EPARSE, "RW_EPARSE", "malformed input"},
    {RW_EDB, "RW_EDB", "database error"},
    {RW_EDESTROYED, "RW_EDESTROYED", "stream destroyed"},
    {RW_EWRITEEND, "RW_EWRITEEND", "write after end"},
    {RW_EPREMATURE, "RW_EPREMATURE", "premature close"},
    {RW_EZLIB, "RW_EZLIB", "compression error"},
    {RW_ECRYPTO, "RW_ECRYPTO", "cryptography error"},
    {RW_ECONFIG, "RW_ECONFIG", "invalid configuration"},
    {RW_ECHILD, "RW_ECHILD", "child process failed"},
    {RW_ETIMEOUT, "RW_ETIMEOUT", "timed out"},
    {RW_ENOTFOUND, "RW_ENOTFOUND", "not found"},
    {RW_EMEDIA, "RW_EMEDIA", "media decode or encode failed"},
    {RW_EAUTH, "RW_EAUTH", "authentication failed"},
};

const char *rw_strerror(int err)
{
    for (size_t i = 0; i < sizeof rw_errors / sizeof rw_errors[0]; i++)
        if (rw_errors[i].code == err)
            return rw_errors[i].msg;
    if (err == 0)
        return "success";
    /* uv_strerror covers UV_E* and falls back to "Unknown system error" for
     * anything else; it does not allocate for known codes. */
    return uv_strerror(err);
}

const char *rw_err_name(int err)
{
    for (size_t i = 0; i < sizeof rw_errors / sizeof rw_errors[0]; i++)
        if (rw_errors[i].code == err)
            return rw_errors[i].name;
    if (err == 0)
        return "OK";
    return uv_err_name(err);
}
