/* Plain-socket helpers shared by the hand-written baselines. */
#ifndef RAWSOCK_H
#define RAWSOCK_H

#include <stddef.h>
#include <sys/uio.h>

/* A listening socket on 127.0.0.1 and a free port; returns the fd. */
int raw_listen(int *port);
/* accept() with TCP_NODELAY on the new socket. */
int raw_accept(int listen_fd);
/* A blocking connection to 127.0.0.1:port with TCP_NODELAY. */
int raw_connect(int port);
/* Writes every byte of iov[0..count), retrying short writes. */
int raw_writev_all(int fd, struct iovec *iov, int count);
/* Reads exactly len bytes; -1 on error or end of stream. */
int raw_read_exact(int fd, void *buf, size_t len);

#endif
