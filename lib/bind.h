/* bind - listening sockets: bind and listen on a parsed address, and
 * clean up after them.  Used by the blocking listener and the server. */
#ifndef SM_LIB_BIND_H
#define SM_LIB_BIND_H

#include "addr.h"

/* A bound, listening, non-blocking, close-on-exec socket. */
typedef struct sm_bound {
    int fd;
    int family;                                                  /* AF_INET, AF_INET6, AF_UNIX */
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* to unlink; "" for TCP */
} sm_bound;

/* Binds and listens on a (SO_REUSEADDR; ":port" is dual-stack; a stale
 * Unix socket file is replaced, a live one is not).  text is the address
 * as the user wrote it, for errors.  Returns 0 or SM_EADDR, SM_ENOMEM,
 * -errno (with sm_last_error() set); never blocks. */
int sm__bind(sm_bound *b, const sm_addr *a, const char *text);

/* Closes the socket and removes its Unix socket file. */
void sm__unbind(sm_bound *b);

#endif
