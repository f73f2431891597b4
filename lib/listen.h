/* listen - listening sockets and accept (sm_listen, sm_accept, ...). */
#ifndef SM_LIB_LISTEN_H
#define SM_LIB_LISTEN_H

#include <sockmsg/sockmsg.h>

/* The address family of l's socket (AF_INET, AF_INET6 or AF_UNIX). */
int sm_listener_family(const sm_listener *l);

#endif
