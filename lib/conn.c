#include "conn.h"

#include "addr.h"
#include "error.h"
#include "frame.h"
#include "sock.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sm_conn {
    int fd;
    sm_options opt;
    pthread_mutex_t send_lock; /* one frame on the wire at a time */
    int send_error;            /* sticky once a frame was cut; send_lock */
    uint8_t *held;             /* SM_MORE frames not yet written; send_lock */
    size_t held_len;           /* bytes in held; send_lock */
    atomic_int holding;        /* held_len > 0, readable without the lock */
    int recv_error;            /* sticky once the stream is unparseable */
    uint8_t *view;             /* sm_recv_view's copy of a large message */
    size_t view_cap;
    size_t rpos, rend; /* unread bytes are rbuf[rpos, rend) */
    uint8_t rbuf[SM_HEADER_LEN + SM_RECV_BUFFER];
};

int sm_options_resolve(sm_options *dst, const sm_options *opts)
{
    static const sm_options defaults;
    *dst = opts ? *opts : defaults;
    if (dst->connect_timeout_ms < 0 || dst->accept_timeout_ms < 0 || dst->send_timeout_ms < 0 ||
        dst->recv_timeout_ms < 0)
        return sm_error_set(SM_EINVAL, "options: timeouts must be >= 0");
    if (dst->max_frame == 0)
        dst->max_frame = SM_DEFAULT_MAX_FRAME;
    return 0;
}

int sm_conn_new(int fd, int family, const sm_options *opts, sm_conn **out)
{
    int rc = sm_sock_set_nodelay(fd, family, opts->nagle);
    if (rc)
        return sm_error_set(rc, "setsockopt TCP_NODELAY");
    sm_conn *c = malloc(sizeof *c);
    if (!c)
        return sm_error_set(SM_ENOMEM, "new connection");
    rc = pthread_mutex_init(&c->send_lock, NULL);
    if (rc) {
        free(c);
        return sm_error_set(-rc, "new connection");
    }
    c->fd = fd;
    c->opt = *opts;
    c->send_error = c->recv_error = 0;
    c->held = c->view = NULL;
    c->held_len = c->view_cap = 0;
    atomic_init(&c->holding, 0);
    c->rpos = c->rend = 0;
    *out = c;
    return 0;
}

static int connect_unix(const sm_addr *a, int64_t deadline)
{
    int fd = sm_socket(AF_UNIX, 0);
    if (fd < 0)
        return fd;
    int rc = sm_sock_connect(fd, (const struct sockaddr *)&a->unix_addr, a->unix_len, deadline);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

/* Tries each resolved address in order; returns an fd or the last error,
 * with the address that gave it in sm_last_error(). */
static int connect_tcp(const sm_addr *a, const char *text, int timeout_ms, int *family)
{
    struct addrinfo *list;
    int rc = sm_addr_resolve(a, 0, &list);
    if (rc)
        return rc;
    rc = -EADDRNOTAVAIL;
    char tried[SM_ADDRSTRLEN] = "";
    for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
        sm_addr_format(ai->ai_addr, ai->ai_addrlen, tried, sizeof tried);
        int fd = sm_socket(ai->ai_family, 0);
        if (fd < 0) {
            rc = fd;
            continue;
        }
        rc = sm_sock_connect(fd, ai->ai_addr, ai->ai_addrlen, sm_deadline(timeout_ms));
        if (rc == 0) {
            *family = ai->ai_family;
            freeaddrinfo(list);
            return fd;
        }
        close(fd);
    }
    freeaddrinfo(list);
    if (strcmp(tried, text) == 0)
        return sm_error_set(rc, "connect to %s", text);
    return sm_error_set(rc, "connect to %s (%s)", tried, text);
}

SM_API int sm_connect_opts(sm_conn **out, const char *addr, const sm_options *opts)
{
    if (!out || !addr)
        return sm_error_set(SM_EINVAL, "sm_connect: NULL argument");
    *out = NULL;
    sm_options opt;
    sm_addr a;
    int rc = sm_options_resolve(&opt, opts);
    if (!rc)
        rc = sm_addr_parse(&a, addr);
    if (rc)
        return rc;
    int family = AF_UNIX;
    int fd;
    if (a.is_unix) {
        fd = connect_unix(&a, sm_deadline(opt.connect_timeout_ms));
        if (fd < 0)
            return sm_error_set(fd, "connect to %s", addr);
    } else if (strcmp(a.port, "0") == 0) {
        return sm_error_set(SM_EADDR, "connect to %s: port 0 is only for listening", addr);
    } else {
        fd = connect_tcp(&a, addr, opt.connect_timeout_ms, &family);
        if (fd < 0)
            return fd;
    }
    rc = sm_conn_new(fd, family, &opt, out);
    if (rc)
        close(fd);
    return rc;
}

SM_API int sm_connect(sm_conn **out, const char *addr)
{
    return sm_connect_opts(out, addr, NULL);
}

/* Writes the held frames, then iov[0..count); send_lock held.  A frame
 * cut short leaves the peer unable to parse what follows, so an error after
 * the first byte sticks. */
static int write_frames(sm_conn *c, struct iovec *iov, int count)
{
    struct iovec all[3] = { { c->held, c->held_len } };
    if (count)
        memcpy(all + 1, iov, (size_t)count * sizeof *iov);
    int first = c->held_len ? 0 : 1;
    size_t sent = 0;
    int rc = c->send_error;
    if (!rc)
        rc = sm_sock_write_all(c->fd, all + first, count + 1 - first,
                               sm_deadline(c->opt.send_timeout_ms), &sent);
    if (rc && sent > 0)
        c->send_error = rc;
    if (!rc || sent > 0) {
        c->held_len = 0;
        atomic_store_explicit(&c->holding, 0, memory_order_relaxed);
    }
    return rc;
}

/* Appends one frame to the held bytes; send_lock held, and it fits. */
static int hold_frame(sm_conn *c, const uint8_t *header, const void *msg, size_t len)
{
    if (!c->held && !(c->held = malloc(SM_SEND_BUFFER)))
        return SM_ENOMEM;
    memcpy(c->held + c->held_len, header, SM_HEADER_LEN);
    if (len)
        memcpy(c->held + c->held_len + SM_HEADER_LEN, msg, len);
    c->held_len += SM_HEADER_LEN + len;
    atomic_store_explicit(&c->holding, 1, memory_order_relaxed);
    return 0;
}

SM_API int sm_send_flags(sm_conn *c, const void *msg, size_t len, int flags)
{
    if (!c || (!msg && len) || (flags & ~SM_MORE))
        return sm_error_set(SM_EINVAL, "sm_send: NULL argument or unknown flag");
    if (len > UINT32_MAX)
        return sm_error_set(SM_ETOOBIG, "sm_send: %zu bytes", len);
    uint8_t header[SM_HEADER_LEN];
    sm_frame_header_put(header, (uint32_t)len);
    struct iovec frame[2] = { { header, sizeof header }, { (void *)msg, len } };

    pthread_mutex_lock(&c->send_lock);
    int rc = c->send_error;
    if (!rc && (flags & SM_MORE) && c->held_len + SM_HEADER_LEN + len <= SM_SEND_BUFFER)
        rc = hold_frame(c, header, msg, len);
    else if (!rc)
        rc = write_frames(c, frame, 2);
    pthread_mutex_unlock(&c->send_lock);
    return rc ? sm_error_set(rc, "send %zu bytes", len) : 0;
}

SM_API int sm_send(sm_conn *c, const void *msg, size_t len)
{
    return sm_send_flags(c, msg, len, 0);
}

SM_API int sm_flush(sm_conn *c)
{
    if (!c)
        return sm_error_set(SM_EINVAL, "sm_flush: NULL connection");
    pthread_mutex_lock(&c->send_lock);
    int rc = c->held_len ? write_frames(c, NULL, 0) : c->send_error;
    pthread_mutex_unlock(&c->send_lock);
    return rc ? sm_error_set(rc, "flush held messages") : 0;
}

/* A receive writes held messages first: the reply may depend on them.
 * If another thread holds the send lock, it is sending: a plain send takes
 * the held frames along, and a batch it is still adding to is its own to
 * end.  Waiting for it instead could deadlock this receiver against a
 * peer that is blocked writing to us. */
static int flush_before_receive(sm_conn *c)
{
    if (!atomic_load_explicit(&c->holding, memory_order_relaxed))
        return 0;
    if (pthread_mutex_trylock(&c->send_lock) != 0)
        return 0;
    int rc = c->held_len ? write_frames(c, NULL, 0) : 0;
    pthread_mutex_unlock(&c->send_lock);
    return rc ? sm_error_set(rc, "flush held messages") : 0;
}

/* Records a receive failure; all but a resumable timeout stick. */
static int recv_fail(sm_conn *c, int rc, int resumable, const char *what)
{
    if (!(resumable && rc == SM_ETIMEDOUT))
        c->recv_error = rc;
    return sm_error_set(rc, "receive %s", what);
}

/* Ensures `need` bytes (at most sizeof rbuf) are buffered, reading as much
 * as fits so one read can bring many small frames.  Returns 0, SM_ECLOSED
 * (end of stream with nothing buffered), SM_ETRUNCATED (end of stream with
 * a partial frame buffered), SM_ETIMEDOUT or -errno. */
static int fill(sm_conn *c, size_t need, int64_t deadline)
{
    if (c->rend - c->rpos >= need)
        return 0;
    if (c->rpos == c->rend)
        c->rpos = c->rend = 0;
    if (c->rpos + need > sizeof c->rbuf) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
        c->rend -= c->rpos;
        c->rpos = 0;
    }
    while (c->rend - c->rpos < need) {
        ssize_t n = sm_sock_read(c->fd, c->rbuf + c->rend, sizeof c->rbuf - c->rend, 0, deadline);
        if (n == 0)
            return c->rend == c->rpos ? SM_ECLOSED : SM_ETRUNCATED;
        if (n < 0)
            return (int)n;
        c->rend += (size_t)n;
    }
    return 0;
}

/* Waits for the next header and returns its length, leaving the header
 * buffered so a caller may still decline the message. */
static int64_t next_length(sm_conn *c, int64_t deadline)
{
    if (c->recv_error)
        return c->recv_error;
    int rc = fill(c, SM_HEADER_LEN, deadline);
    if (rc)
        return recv_fail(c, rc, 1, "header");
    uint32_t len = sm_frame_header_get(c->rbuf + c->rpos);
    if (len > c->opt.max_frame) {
        c->recv_error = SM_ETOOBIG;
        return sm_error_set(SM_ETOOBIG, "receive: peer announced %u bytes, max frame is %u", len,
                            c->opt.max_frame);
    }
    return len;
}

/* Moves the payload of the frame whose header is buffered into dst. */
static int read_payload(sm_conn *c, uint8_t *dst, size_t len, int64_t deadline)
{
    if (len <= SM_RECV_BUFFER) {
        /* Gather the whole frame before consuming any of it, so a timeout
         * here loses nothing. */
        int rc = fill(c, SM_HEADER_LEN + len, deadline);
        if (rc)
            return recv_fail(c, rc, 1, "payload");
        memcpy(dst, c->rbuf + c->rpos + SM_HEADER_LEN, len);
        c->rpos += SM_HEADER_LEN + len;
        return 0;
    }
    c->rpos += SM_HEADER_LEN;
    size_t done = c->rend - c->rpos;
    memcpy(dst, c->rbuf + c->rpos, done);
    c->rpos = c->rend = 0;
    while (done < len) {
        ssize_t n = sm_sock_read(c->fd, dst + done, len - done, MSG_WAITALL, deadline);
        if (n <= 0)
            return recv_fail(c, n == 0 ? SM_ETRUNCATED : (int)n, 0, "large payload");
        done += (size_t)n;
    }
    return 0;
}

/* What every receive does first: write held frames, start the timeout,
 * and wait for the next header.  Returns its length or an error. */
static int64_t begin_receive(sm_conn *c, int64_t *deadline)
{
    int rc = flush_before_receive(c);
    if (rc)
        return rc;
    *deadline = sm_deadline(c->opt.recv_timeout_ms);
    return next_length(c, *deadline);
}

SM_API ssize_t sm_recv(sm_conn *c, void *buf, size_t cap)
{
    if (!c || (!buf && cap))
        return sm_error_set(SM_EINVAL, "sm_recv: NULL argument");
    int64_t deadline = -1;
    int64_t len = begin_receive(c, &deadline);
    if (len < 0)
        return (ssize_t)len;
    if ((uint64_t)len > cap)
        return sm_error_set(SM_EMSGSIZE, "receive: message of %lld bytes, buffer holds %zu",
                            (long long)len, cap);
    int rc = read_payload(c, buf, (size_t)len, deadline);
    return rc ? rc : (ssize_t)len;
}

SM_API ssize_t sm_recv_alloc(sm_conn *c, void **msg)
{
    if (!msg)
        return sm_error_set(SM_EINVAL, "sm_recv_alloc: NULL argument");
    *msg = NULL;
    if (!c)
        return sm_error_set(SM_EINVAL, "sm_recv_alloc: NULL argument");
    int64_t deadline = -1;
    int64_t len = begin_receive(c, &deadline);
    if (len < 0)
        return (ssize_t)len;
    uint8_t *p = malloc(len ? (size_t)len : 1);
    if (!p)
        return sm_error_set(SM_ENOMEM, "receive: %lld bytes", (long long)len);
    int rc = read_payload(c, p, (size_t)len, deadline);
    if (rc) {
        free(p);
        return rc;
    }
    *msg = p;
    return (ssize_t)len;
}

/* Points *msg at the buffered payload of a small frame, with no copy. */
static int view_buffered(sm_conn *c, size_t len, int64_t deadline, const void **msg)
{
    int rc = fill(c, SM_HEADER_LEN + len, deadline);
    if (rc)
        return recv_fail(c, rc, 1, "payload");
    *msg = c->rbuf + c->rpos + SM_HEADER_LEN;
    c->rpos += SM_HEADER_LEN + len;
    return 0;
}

/* A large frame cannot be viewed in rbuf: it goes to a buffer of the
 * connection's, kept while messages stay large. */
static int view_large(sm_conn *c, size_t len, int64_t deadline, const void **msg)
{
    if (len > c->view_cap) {
        free(c->view);
        c->view_cap = 0;
        if (!(c->view = malloc(len)))
            return sm_error_set(SM_ENOMEM, "receive: %zu bytes", len);
        c->view_cap = len;
    }
    int rc = read_payload(c, c->view, len, deadline);
    if (!rc)
        *msg = c->view;
    return rc;
}

SM_API ssize_t sm_recv_view(sm_conn *c, const void **msg)
{
    if (!msg)
        return sm_error_set(SM_EINVAL, "sm_recv_view: NULL argument");
    *msg = NULL;
    if (!c)
        return sm_error_set(SM_EINVAL, "sm_recv_view: NULL argument");
    int64_t deadline = -1;
    int64_t len = begin_receive(c, &deadline);
    if (len < 0)
        return (ssize_t)len;
    if (len <= SM_RECV_BUFFER && c->view) {
        free(c->view);
        c->view = NULL;
        c->view_cap = 0;
    }
    int rc = len <= SM_RECV_BUFFER ? view_buffered(c, (size_t)len, deadline, msg)
                                   : view_large(c, (size_t)len, deadline, msg);
    return rc ? rc : (ssize_t)len;
}

SM_API int sm_recv_ready(const sm_conn *c)
{
    size_t have = c ? c->rend - c->rpos : 0;
    return have >= SM_HEADER_LEN && have - SM_HEADER_LEN >= sm_frame_header_get(c->rbuf + c->rpos);
}

SM_API int sm_conn_set_options(sm_conn *c, const sm_options *opts)
{
    sm_options opt;
    if (!c)
        return sm_error_set(SM_EINVAL, "sm_conn_set_options: NULL connection");
    int rc = sm_options_resolve(&opt, opts);
    if (rc)
        return rc;
    if (opt.nagle != c->opt.nagle) {
        struct sockaddr_storage ss = { 0 };
        socklen_t len = sizeof ss;
        if (getsockname(c->fd, (struct sockaddr *)&ss, &len) < 0)
            return sm_error_set(-errno, "getsockname");
        rc = sm_sock_set_nodelay(c->fd, ss.ss_family, opt.nagle);
        if (rc)
            return sm_error_set(rc, "setsockopt TCP_NODELAY");
    }
    c->opt = opt;
    return 0;
}

SM_API int sm_conn_peer(const sm_conn *c, char *buf, size_t len)
{
    if (!c || !buf)
        return sm_error_set(SM_EINVAL, "sm_conn_peer: NULL argument");
    return sm_addr_of_fd(c->fd, 1, buf, len);
}

SM_API int sm_conn_fd(const sm_conn *c)
{
    return c ? c->fd : SM_EINVAL;
}

SM_API void sm_close(sm_conn *c)
{
    if (!c)
        return;
    /* Held messages go out first, as the caller would expect; a failure
     * here has no one to report to (sm_flush first to see it). */
    if (c->held_len)
        sm_flush(c);
    close(c->fd);
    pthread_mutex_destroy(&c->send_lock);
    free(c->held);
    free(c->view);
    free(c);
}
