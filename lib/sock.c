#include "sock.h"

#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int64_t sm__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sm__deadline(int timeout_ms)
{
    return timeout_ms > 0 ? sm__now_ms() + timeout_ms : -1;
}

/* Waits until one of the n descriptors is ready for what it asks. */
static int wait_any(struct pollfd *p, nfds_t n, int64_t deadline)
{
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - sm__now_ms();
            if (left <= 0)
                return SM_ETIMEDOUT;
            timeout = left > 1000000 ? 1000000 : (int)left;
        }
        int ready = poll(p, n, timeout);
        if (ready > 0)
            return 0;
        if (ready < 0 && errno != EINTR)
            return -errno;
    }
}

int sm__wait(int fd, short events, int64_t deadline)
{
    struct pollfd p = { .fd = fd, .events = events };
    return wait_any(&p, 1, deadline);
}

int sm__wait_in_or_out(int in_fd, int out_fd, int64_t deadline)
{
    struct pollfd p[2] = { { .fd = in_fd, .events = POLLIN }, { .fd = out_fd, .events = POLLOUT } };
    if (in_fd == out_fd)
        p[0].events |= POLLOUT;
    return wait_any(p, in_fd == out_fd ? 1 : 2, deadline);
}

int sm__socket(int family, int flags)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    return fd < 0 ? -errno : fd;
}

static int set_blocking(int fd, int blocking)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
    return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

/* A non-blocking connect, so the wait can honour the deadline; EINTR on a
 * blocking connect would leave it running in the background anyway. */
int sm__sock_connect(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline)
{
    int rc = set_blocking(fd, 0);
    if (rc)
        return rc;
    if (connect(fd, sa, len) < 0) {
        if (errno != EINPROGRESS && errno != EINTR)
            return -errno;
        rc = sm__wait(fd, POLLOUT, deadline);
        if (rc)
            return rc;
        int err = 0;
        socklen_t err_len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) < 0)
            return -errno;
        if (err)
            return -err;
    }
    return set_blocking(fd, 1);
}

/* Sets SO_SNDTIMEO to what is left until the deadline (none: no limit).
 * Returns 0, SM_ETIMEDOUT if the deadline has passed, or -errno. */
static int set_send_timeout(int fd, int64_t deadline)
{
    struct timeval tv = { 0, 0 };
    if (deadline >= 0) {
        int64_t left = deadline - sm__now_ms();
        if (left <= 0)
            return SM_ETIMEDOUT;
        tv.tv_sec = (time_t)(left / 1000);
        tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
    }
    return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ? -errno : 0;
}

/* A Unix socket has no connect in progress: while the listener's backlog
 * is full, a non-blocking connect fails with EAGAIN at once.  A blocking
 * one waits for room, for as long as SO_SNDTIMEO allows. */
int sm__sock_connect_unix(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline)
{
    int rc;
    while ((rc = set_send_timeout(fd, deadline)) == 0 && connect(fd, sa, len) < 0) {
        if (errno == EINTR)
            continue; /* a Unix connect is all or nothing: safe to repeat */
        return errno == EAGAIN && deadline >= 0 ? SM_ETIMEDOUT : -errno;
    }
    return rc ? rc : set_send_timeout(fd, -1);
}

int sm__sock_accept(int listen_fd, int flags)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | flags);
        if (fd >= 0)
            return fd;
        /* ECONNABORTED: the client left before we took it; try the next. */
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int sm__sock_adopt(int fd, int listening, int *family)
{
    int on = 0;
    socklen_t on_len = sizeof on;
    struct sockaddr_storage ss = { 0 };
    socklen_t len = sizeof ss;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &on_len) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (!on != !listening)
        return SM_EINVAL;
    int rc = set_blocking(fd, 0);
    if (!rc && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        rc = -errno;
    *family = ss.ss_family;
    return rc;
}

int sm__set_nonblocking(int fd)
{
    return set_blocking(fd, 0);
}

int sm__sock_set_nodelay(int fd, int family, int nagle)
{
    if (family != AF_INET && family != AF_INET6)
        return 0;
    int on = !nagle;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0 ? -errno : 0;
}

/* One read: recv on a socket; read on any other fd, which is
 * non-blocking, so a wait always goes through poll and its deadline. */
static ssize_t read_once(int fd, int plain, void *buf, size_t len, int flags)
{
    return plain ? read(fd, buf, len) : recv(fd, buf, len, flags);
}

/* With no deadline a blocking socket simply blocks (one syscall per
 * read); with one, MSG_DONTWAIT and poll() bound the wait. */
ssize_t sm__io_read(int fd, int plain, void *buf, size_t len, int flags, int64_t deadline)
{
    if (deadline >= 0)
        flags = (flags & ~MSG_WAITALL) | MSG_DONTWAIT;
    for (;;) {
        ssize_t n = read_once(fd, plain, buf, len, flags);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rc = sm__wait(fd, POLLIN, deadline);
        if (rc)
            return rc;
    }
}

static void advance(struct iovec **iov, int *iovcnt, size_t n)
{
    while (*iovcnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*iovcnt)--;
    }
    if (*iovcnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* writev to a pipe whose reader has gone raises SIGPIPE, and the library
 * promises never to: the signal is blocked in this thread for the call,
 * and taken back if this write raised it. */
static ssize_t writev_quietly(int fd, const struct iovec *iov, int iovcnt)
{
    sigset_t pipe_only, old, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    ssize_t n = writev(fd, iov, iovcnt);
    int err = errno;
    if (n < 0 && err == EPIPE && !was_pending) {
        static const struct timespec now;
        sigtimedwait(&pipe_only, NULL, &now);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return n;
}

/* One write: sendmsg on a socket; writev on any other (non-blocking) fd. */
static ssize_t write_once(int fd, int plain, struct iovec *iov, int iovcnt, int flags)
{
    if (plain)
        return writev_quietly(fd, iov, iovcnt);
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
    return sendmsg(fd, &msg, flags);
}

int sm__io_write_all(int fd, int plain, struct iovec *iov, int iovcnt, int64_t deadline,
                     size_t *sent)
{
    /* MSG_NOSIGNAL: a vanished peer is an EPIPE return, never SIGPIPE. */
    int flags = MSG_NOSIGNAL | (deadline >= 0 ? MSG_DONTWAIT : 0);
    *sent = 0;
    while (iovcnt > 0) {
        ssize_t n = write_once(fd, plain, iov, iovcnt, flags);
        if (n >= 0) {
            *sent += (size_t)n;
            advance(&iov, &iovcnt, (size_t)n);
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rc = sm__wait(fd, POLLOUT, deadline);
        if (rc)
            return rc;
    }
    return 0;
}
