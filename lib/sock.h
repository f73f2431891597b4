/* sock - OS socket calls with deadlines, EINTR retries and no SIGPIPE. */
#ifndef SM_LIB_SOCK_H
#define SM_LIB_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t sm__now_ms(void);

/* A deadline is a CLOCK_MONOTONIC time in ms, or -1 for none.  SM_NOW
 * is one long past: a read or write tries once and never waits. */
#define SM_NOW 0
int64_t sm__deadline(int timeout_ms);

/* Waits until fd is ready for events (POLLIN/POLLOUT).  Returns 0,
 * SM_ETIMEDOUT or -errno. */
int sm__wait(int fd, short events, int64_t deadline);

/* Waits until in_fd is readable or out_fd writable (they may be one fd).
 * Returns 0, SM_ETIMEDOUT or -errno. */
int sm__wait_in_or_out(int in_fd, int out_fd, int64_t deadline);

/* A close-on-exec stream socket; flags may add SOCK_NONBLOCK.  Returns the
 * fd or -errno. */
int sm__socket(int family, int flags);

/* Connects a blocking fd within the deadline.  Returns 0, SM_ETIMEDOUT or
 * -errno; fd is blocking again afterwards. */
int sm__sock_connect(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline);

/* Connects a blocking Unix-domain fd within the deadline, waiting while
 * the listener's backlog is full.  Returns 0, SM_ETIMEDOUT or -errno. */
int sm__sock_connect_unix(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline);

/* Takes one client from a non-blocking listening socket; flags may add
 * SOCK_NONBLOCK.  Returns its close-on-exec fd, -EAGAIN when none waits,
 * or -errno (-EMFILE: out of descriptors, the client stays queued). */
int sm__sock_accept(int listen_fd, int flags);

/* Takes in a socket from outside the library (a caller, a parent,
 * systemd): checks it is a socket that listens (listening != 0) or not,
 * makes it non-blocking and close-on-exec, and stores its family.
 * Returns 0, SM_EINVAL (listening or not, against the wish) or -errno
 * (-ENOTSOCK: not a socket). */
int sm__sock_adopt(int fd, int listening, int *family);

/* Makes fd non-blocking; returns 0 or -errno. */
int sm__set_nonblocking(int fd);

/* Sets TCP_NODELAY on TCP sockets unless nagle; returns 0 or -errno. */
int sm__sock_set_nodelay(int fd, int family, int nagle);

/* A connection's descriptor is a socket, or with plain set any other
 * stream fd (a pipe, a serial port), which must then be non-blocking. */

/* One read that waits up to the deadline: returns bytes read (> 0), 0 at
 * end of stream, SM_ETIMEDOUT or -errno.  flags (sockets) may add
 * MSG_WAITALL. */
ssize_t sm__io_read(int fd, int plain, void *buf, size_t len, int flags, int64_t deadline);

/* Writes all of iov (modified in place) within the deadline, never
 * raising SIGPIPE.  *sent counts the bytes written, also on failure.
 * Returns 0, SM_ETIMEDOUT or -errno. */
int sm__io_write_all(int fd, int plain, struct iovec *iov, int iovcnt, int64_t deadline,
                     size_t *sent);

#endif
