#include "listen.h"

#include "addr.h"
#include "bind.h"
#include "conn.h"
#include "error.h"
#include "sock.h"
#include "tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sm_listener {
    sm_bound bound;
    sm_options opt;
    sm_tls_ctx *tls; /* TLS for every accepted connection, or NULL */
};

SM_API int sm_listen_opts(sm_listener **out, const char *addr, const sm_options *opts)
{
    if (!out || !addr)
        return sm__error_set(SM_EINVAL, "sm_listen: NULL argument");
    *out = NULL;
    sm_listener *l = calloc(1, sizeof *l);
    if (!l)
        return sm__error_set(SM_ENOMEM, "sm_listen");
    sm_addr a;
    int rc = sm__options_resolve(&l->opt, opts);
    if (!rc)
        rc = sm__addr_parse(&a, addr);
    if (!rc && l->opt.tls)
        rc = sm__tls_ctx_new(&l->tls, l->opt.tls, 1);
    l->opt.tls = NULL; /* the caller's: the context holds what it needs */
    if (!rc)
        rc = sm__bind(&l->bound, &a, addr);
    if (rc) {
        sm__tls_ctx_unref(l->tls);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

SM_API int sm_listen(sm_listener **out, const char *addr)
{
    return sm_listen_opts(out, addr, NULL);
}

/* The server side of TLS on a new connection: the handshake within the
 * accept timeout (non-blocking: in the calls that follow). */
static int accept_tls(sm_listener *l, int fd, int64_t deadline, sm_tls **tls)
{
    int rc = sm__set_nonblocking(fd);
    if (!rc)
        rc = sm__tls_new(tls, l->tls, fd, NULL);
    if (!rc && !l->opt.nonblocking)
        rc = sm__tls_handshake_wait(*tls, fd, deadline);
    return rc;
}

SM_API int sm_accept(sm_listener *l, sm_conn **out)
{
    if (!l || !out)
        return sm__error_set(SM_EINVAL, "sm_accept: NULL argument");
    *out = NULL;
    int64_t deadline = sm__deadline(l->opt.accept_timeout_ms);
    int fd;
    while ((fd = sm__sock_accept(l->bound.fd, 0)) == -EAGAIN) {
        int rc = l->opt.nonblocking ? SM_EAGAIN : sm__wait(l->bound.fd, POLLIN, deadline);
        if (rc)
            return sm__error_set(rc, "accept");
    }
    if (fd < 0)
        return sm__error_set(fd, "accept");
    sm_tls *tls = NULL;
    int rc = l->tls ? accept_tls(l, fd, deadline, &tls) : 0;
    if (!rc)
        rc = sm__conn_new(fd, l->bound.family, &l->opt, tls, out);
    if (rc) {
        sm__tls_free(tls);
        close(fd);
    }
    return rc;
}

SM_API int sm_listener_addr(const sm_listener *l, char *buf, size_t len)
{
    if (!l || !buf)
        return sm__error_set(SM_EINVAL, "sm_listener_addr: NULL argument");
    return sm__addr_of_fd(l->bound.fd, 0, buf, len);
}

SM_API int sm_listener_fd(const sm_listener *l)
{
    return l ? l->bound.fd : SM_EINVAL;
}

SM_API void sm_listener_close(sm_listener *l)
{
    if (!l)
        return;
    sm__unbind(&l->bound);
    sm__tls_ctx_unref(l->tls);
    free(l);
}
