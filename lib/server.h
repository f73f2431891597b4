/* server - the event loop for many connections (sm_server_* in the public
 * header).  Private: the input path, reachable without a socket read. */
#ifndef SM_LIB_SERVER_H
#define SM_LIB_SERVER_H

#include <sockmsg/sockmsg.h>

/* Handles bytes as if just read from client id; len 0 is end of stream.
 * Returns 0 or SM_ENOCONN.  Loop thread only. */
int sm__server_input(sm_server *s, sm_conn_id id, const uint8_t *data, size_t len);

#endif
