#include "listen.h"

#include "addr.h"
#include "conn.h"
#include "error.h"
#include "sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sm_listener {
    int fd;
    int family;
    sm_options opt;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* to unlink */
};

/* Binds and listens; the fd is non-blocking so accept after poll() can
 * never hang when a client vanished in between. */
static int bind_listen(int family, const struct sockaddr *sa, socklen_t len, int dual_stack)
{
    int fd = sm_socket(family, SOCK_NONBLOCK);
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
    int rc = sm_addr_resolve(a, 1, &list);
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
    int fd = sm_socket(AF_UNIX, SOCK_NONBLOCK);
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

SM_API int sm_listen_opts(sm_listener **out, const char *addr, const sm_options *opts)
{
    if (!out || !addr)
        return sm_error_set(SM_EINVAL, "sm_listen: NULL argument");
    *out = NULL;
    sm_listener *l = calloc(1, sizeof *l);
    if (!l)
        return sm_error_set(SM_ENOMEM, "sm_listen");
    sm_addr a;
    int rc = sm_options_resolve(&l->opt, opts);
    if (!rc)
        rc = sm_addr_parse(&a, addr);
    if (rc) {
        free(l);
        return rc;
    }
    l->family = AF_UNIX;
    if (a.is_unix)
        l->fd = listen_unix(&a);
    else if (a.host[0] == '\0')
        l->fd = listen_any(&a, &l->family);
    else
        l->fd = listen_resolved(&a, &l->family);
    if (l->fd < 0) {
        rc = l->fd;
        free(l);
        return rc == SM_EADDR || rc == SM_ENOMEM ? rc : sm_error_set(rc, "listen on %s", addr);
    }
    if (a.is_unix)
        memcpy(l->unix_path, a.unix_addr.sun_path, sizeof l->unix_path);
    *out = l;
    return 0;
}

SM_API int sm_listen(sm_listener **out, const char *addr)
{
    return sm_listen_opts(out, addr, NULL);
}

SM_API int sm_accept(sm_listener *l, sm_conn **out)
{
    if (!l || !out)
        return sm_error_set(SM_EINVAL, "sm_accept: NULL argument");
    *out = NULL;
    int64_t deadline = sm_deadline(l->opt.accept_timeout_ms);
    int fd;
    for (;;) {
        fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            break;
        /* ECONNABORTED: the client left before we took it; wait for the next. */
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return sm_error_set(-errno, "accept");
        int rc = sm_wait(l->fd, POLLIN, deadline);
        if (rc)
            return sm_error_set(rc, "accept");
    }
    int rc = sm_conn_new(fd, l->family, &l->opt, out);
    if (rc)
        close(fd);
    return rc;
}

SM_API int sm_listener_addr(const sm_listener *l, char *buf, size_t len)
{
    if (!l || !buf)
        return sm_error_set(SM_EINVAL, "sm_listener_addr: NULL argument");
    return sm_addr_of_fd(l->fd, 0, buf, len);
}

int sm_listener_family(const sm_listener *l)
{
    return l->family;
}

SM_API int sm_listener_fd(const sm_listener *l)
{
    return l ? l->fd : SM_EINVAL;
}

SM_API void sm_listener_close(sm_listener *l)
{
    if (!l)
        return;
    if (l->unix_path[0])
        unlink(l->unix_path);
    close(l->fd);
    free(l);
}
