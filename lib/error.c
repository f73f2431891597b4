#include "error.h"

#include <sockmsg/sockmsg.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[256];
static _Thread_local char errno_text[128];

static const char *library_error_text(int rc)
{
    switch (rc) {
    case SM_ECLOSED: return "connection closed by peer";
    case SM_ETRUNCATED: return "connection closed inside a message (truncated frame)";
    case SM_ETOOBIG: return "message larger than the maximum frame size";
    case SM_EMSGSIZE: return "message larger than the receive buffer";
    case SM_ETIMEDOUT: return "timed out";
    case SM_EADDR: return "bad address";
    case SM_EINVAL: return "invalid argument";
    case SM_ENOMEM: return "out of memory";
    case SM_ENOCONN: return "no such connection";
    case SM_ESTOPPED: return "server stopped";
    case SM_EFULL: return "connection's output queue is full";
    case SM_EBROKEN: return "connection broken: a message was cut short and cannot be finished";
    case SM_EAGAIN: return "would block: try again when the connection is ready";
    case SM_ETLS: return "TLS failed";
    case SM_EVERIFY: return "TLS certificate verification failed";
    case SM_ENOTLS: return "TLS is not available: libsockmsg was built without OpenSSL";
    default: return NULL;
    }
}

SM_API const char *sm_strerror(int rc)
{
    if (rc >= 0)
        return "success";
    const char *text = library_error_text(rc);
    if (text)
        return text;
    /* Every other negative code is -errno; GNU strerror_r is thread-safe. */
    return strerror_r(-rc, errno_text, sizeof errno_text);
}

SM_API const char *sm_last_error(void)
{
    return last_error;
}

int sm__error_set(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof last_error)
        snprintf(last_error + n, sizeof last_error - (size_t)n, ": %s", sm_strerror(rc));
    return rc;
}

SM_API const char *sm_version(void)
{
#define SM_STR2(x) #x
#define SM_STR(x) SM_STR2(x)
    return SM_STR(SM_VERSION_MAJOR) "." SM_STR(SM_VERSION_MINOR) "." SM_STR(SM_VERSION_PATCH);
}
