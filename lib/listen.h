/* listen - listening sockets and accept.  Everything it offers is public
 * API (sm_listen, sm_accept, ...); this header exists for symmetry. */
#ifndef SM_LIB_LISTEN_H
#define SM_LIB_LISTEN_H

#include <sockmsg/sockmsg.h>

#endif
