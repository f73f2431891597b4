/* conn - blocking framed I/O on one connection. */
#ifndef SM_LIB_CONN_H
#define SM_LIB_CONN_H

#include <sockmsg/sockmsg.h>

#include "tls.h"

/* Copies opts (NULL: defaults) into *dst with defaults filled in.
 * Returns 0 or SM_EINVAL for a negative timeout. */
int sm__options_resolve(sm_options *dst, const sm_options *opts);

/* Wraps a connected, blocking, close-on-exec fd of the given family.  On
 * success the connection owns fd; on failure the caller still does. */
int sm__conn_new(int fd, int family, const sm_options *opts, sm_tls *tls, sm_conn **out);

#endif
