/* Raw sockets: plain POSIX, so the bytes on the wire are exactly what a
 * test writes, and whole frames over them. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static int parse_unix(const char *path, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    if (strlen(path) >= sizeof un->sun_path)
        return -EINVAL;
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, path);
    *len = sizeof *un;
    return 0;
}

/* "a.b.c.d:port" or "[v6]:port" (the brackets are dropped). */
static int parse_inet(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return -EINVAL;
    const char *host = addr;
    size_t host_len = (size_t)(colon - addr);
    if (addr[0] == '[' && host_len >= 2) {
        host++;
        host_len -= 2;
    }
    char text[INET6_ADDRSTRLEN];
    if (host_len >= sizeof text)
        return -EINVAL;
    memcpy(text, host, host_len);
    text[host_len] = '\0';
    uint16_t port = htons((uint16_t)addr_port(addr));
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = port;
        *len = sizeof *in;
    } else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = port;
        *len = sizeof *in6;
    } else {
        return -EINVAL;
    }
    return 0;
}

/* A blocking connect that a signal interrupted goes on in the background:
 * wait for it and take its outcome.  0, or -1 with errno set. */
static int connect_interrupted(int fd)
{
    if (errno != EINTR)
        return -1;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int err = 0;
    socklen_t len = sizeof err;
    while (poll(&p, 1, WAIT_MS) < 0 && errno == EINTR) {
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        errno = err ? err : errno;
        return -1;
    }
    return (p.revents & POLLOUT) ? 0 : (errno = ETIMEDOUT, -1);
}

int raw_connect(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    int rc = strncmp(addr, "unix:", 5) == 0 ? parse_unix(addr + 5, &ss, &len)
                                            : parse_inet(addr, &ss, &len);
    if (rc)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 && connect_interrupted(fd) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    if (ss.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int raw_client(const char *addr)
{
    int fd = raw_connect(addr);
    cr_assert(fd >= 0, "raw connect to %s: %s", addr, strerror(-fd));
    return fd;
}

int raw_listener(char addr[SM_ADDRSTRLEN])
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in in = { .sin_family = AF_INET };
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof in;
    cr_assert_eq(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
    cr_assert_eq(listen(fd, 64), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&in, &len), 0);
    snprintf(addr, SM_ADDRSTRLEN, "127.0.0.1:%u", ntohs(in.sin_port));
    return fd;
}

int raw_accept(int lfd)
{
    struct pollfd p = { .fd = lfd, .events = POLLIN };
    cr_assert_eq(poll(&p, 1, WAIT_MS), 1, "nobody connected");
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(fd, 0, "accept: %s", strerror(errno));
    return fd;
}

void set_io_timeout(int fd, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

void reset_close(int fd)
{
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

void raw_write(int fd, const void *p, size_t n)
{
    set_io_timeout(fd, WAIT_MS);
    int rc = write_all(fd, p, n);
    cr_assert_eq(rc, 0, "raw write: %s", strerror(-rc));
}

/* Never blocks, so a peer that stops reading cannot hold the test: it
 * simply takes less. */
size_t offer(int fd, const void *p, size_t n, int ms, int *err)
{
    const uint8_t *b = p;
    size_t done = 0;
    int64_t end = now_ms() + ms;
    if (err)
        *err = 0;
    while (done < n && now_ms() < end) {
        ssize_t k = send(fd, b + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            done += (size_t)k;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd q = { .fd = fd, .events = POLLOUT };
            poll(&q, 1, 20);
        } else if (!(k < 0 && errno == EINTR)) {
            if (err)
                *err = k < 0 ? errno : EIO;
            break;
        }
    }
    return done;
}

int read_exact(int fd, void *buf, size_t n, int64_t deadline)
{
    size_t got = 0;
    while (got < n) {
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            return SM_ETIMEDOUT;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, left);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r <= 0)
            continue;
        ssize_t k = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
        if (k == 0)
            return got ? SM_ETRUNCATED : SM_ECLOSED;
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            return -errno;
        }
        got += (size_t)k;
    }
    return 0;
}

int raw_send_frame(int fd, const void *p, size_t n)
{
    uint8_t h[4];
    put32(h, (uint32_t)n);
    set_io_timeout(fd, WAIT_MS);
    int rc = write_all(fd, h, sizeof h);
    return rc ? rc : write_all(fd, p, n);
}

ssize_t raw_recv_frame(int fd, void *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    uint8_t h[4];
    int rc = read_exact(fd, h, sizeof h, deadline);
    if (rc)
        return rc;
    uint32_t len = get32(h);
    if (len > cap)
        return SM_EMSGSIZE;
    rc = read_exact(fd, buf, len, deadline);
    if (rc)
        return rc == SM_ECLOSED ? SM_ETRUNCATED : rc;
    return (ssize_t)len;
}

int raw_wait_closed(int fd, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    char buf[16384];
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0)
            return SM_ETIMEDOUT;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k == 0)
            return 0;
        if (k < 0 && errno != EINTR && errno != EAGAIN)
            return -errno;
    }
}

void assert_closed_by_peer(int fd, const char *what)
{
    int rc = raw_wait_closed(fd, WAIT_MS);
    cr_assert(rc == 0 || rc == -ECONNRESET, "%s: the connection was not closed (%s)", what,
              sm_strerror(rc));
}

int kernel_unread(int fd)
{
    int n = -1;
    if (ioctl(fd, FIONREAD, &n) != 0)
        return -1;
    return n;
}

void wait_unread(int fd, int want)
{
    int64_t end = now_ms() + 3000;
    while (kernel_unread(fd) < want && now_ms() < end)
        sleep_ms(2);
    cr_assert_geq(kernel_unread(fd), want, "bytes arrived in the kernel");
}

unsigned addr_port(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    return colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
}

void unix_addr(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "unix:/tmp/sm-test-%ld-%s.sock", (long)getpid(), tag);
}
