/* listen - the blocking listener and accept (sm_listen, sm_accept, ...),
 * over the sockets layer's bind.  Nothing private to export. */
#ifndef SM_LIB_LISTEN_H
#define SM_LIB_LISTEN_H

#include <sockmsg/sockmsg.h>

#endif
