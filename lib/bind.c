#include "bind.h"

#include "error.h"
#include "sock.h"

#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Binds and listens; the fd is non-blocking so accept after poll() can
 * never hang when a client vanished in between. */
static int bind_listen(int family, const struct sockaddr *sa, socklen_t len, int dual_stack)
{
    int fd = sm__socket(family, SOCK_NONBLOCK);
    if (fd < 0)
        return fd;
    int on = 1, off = 0;
    if (family != AF_UNIX && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0)
        goto fail;
    if (dual_stack && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0)
        goto fail;
    if (bind(fd, sa, len) < 0 || listen(fd, SOMAXCONN) < 0)
        goto fail;
    return fd;
fail:;
    int rc = -errno;
    close(fd);
    return rc;
}

/* ":port" - one IPv6 socket that also takes IPv4, or IPv4 alone on a
 * host without IPv6. */
static int listen_any(const sm_addr *a, int *family)
{
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6,
                                .sin6_addr = IN6ADDR_ANY_INIT,
                                .sin6_port = htons((uint16_t)strtoul(a->port, NULL, 10)) };
    *family = AF_INET6;
    int fd = bind_listen(AF_INET6, (struct sockaddr *)&in6, sizeof in6, 1);
    if (fd != -EAFNOSUPPORT)
        return fd;
    struct sockaddr_in in = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_ANY),
                              .sin_port = in6.sin6_port };
    *family = AF_INET;
    return bind_listen(AF_INET, (struct sockaddr *)&in, sizeof in, 0);
}

static int listen_resolved(const sm_addr *a, int *family)
{
    struct addrinfo *list;
    int rc = sm__addr_resolve(a, 1, &list);
    if (rc)
        return rc;
    int fd = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = list; ai && fd < 0; ai = ai->ai_next) {
        fd = bind_listen(ai->ai_family, ai->ai_addr, ai->ai_addrlen, 0);
        *family = ai->ai_family;
    }
    freeaddrinfo(list);
    return fd;
}

/* A socket file left by a server that died is replaced; one that a live
 * server still answers on is not.  The probe is non-blocking: a live
 * server whose backlog is full answers EAGAIN at once instead of making
 * us wait for it. */
static int remove_stale_socket(const sm_addr *a)
{
    struct stat st;
    if (stat(a->unix_addr.sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 0;
    int fd = sm__socket(AF_UNIX, SOCK_NONBLOCK);
    if (fd < 0)
        return fd;
    int rc = connect(fd, (const struct sockaddr *)&a->unix_addr, a->unix_len);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN)
        return -EADDRINUSE;
    if (err == ECONNREFUSED)
        unlink(a->unix_addr.sun_path);
    return 0;
}

static int listen_unix(const sm_addr *a)
{
    int rc = remove_stale_socket(a);
    if (rc)
        return rc;
    return bind_listen(AF_UNIX, (const struct sockaddr *)&a->unix_addr, a->unix_len, 0);
}

int sm__bind(sm_bound *b, const sm_addr *a, const char *text)
{
    memset(b, 0, sizeof *b);
    b->family = AF_UNIX;
    if (a->is_unix)
        b->fd = listen_unix(a);
    else if (a->host[0] == '\0')
        b->fd = listen_any(a, &b->family);
    else
        b->fd = listen_resolved(a, &b->family);
    if (b->fd < 0) {
        int rc = b->fd;
        return rc == SM_EADDR || rc == SM_ENOMEM ? rc : sm__error_set(rc, "listen on %s", text);
    }
    if (a->is_unix)
        memcpy(b->unix_path, a->unix_addr.sun_path, sizeof b->unix_path);
    return 0;
}

void sm__unbind(sm_bound *b)
{
    if (b->unix_path[0])
        unlink(b->unix_path);
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
}
