#include "conn.h"

#include "addr.h"
#include "backoff.h"
#include "error.h"
#include "frame.h"
#include "sock.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How many frames a reader that keeps up with a one-way stream leaves in
 * the kernel when it reads in bulk (see read_size). */
#define KEEP_FRAMES 8

struct sm_conn {
    int fd;            /* read from here... */
    int out_fd;        /* ...write here: the same but for a pipe pair */
    int plain;         /* not sockets: read and writev, non-blocking */
    int connecting;    /* a non-blocking connect is in progress */
    int connect_error; /* how it failed: every call reports it */
    sm_tls *tls;       /* TLS session, or NULL */
    int handshaking;   /* non-blocking: the TLS handshake is not done */
    short tls_want;    /* ...and waits for this readiness */
    sm_options opt;
    pthread_mutex_t send_lock; /* one frame on the wire at a time */
    int send_error;            /* sticky once the stream is unusable; send_lock */
    uint8_t *held;             /* bytes not yet written: SM_MORE frames, or the
                                * rest of a frame a timeout cut; send_lock */
    size_t held_len, held_cap; /* send_lock */
    atomic_int holding;        /* held_len > 0, readable without the lock */
    int recv_error;            /* sticky once the stream is unparseable */
    uint8_t *view;             /* sm_recv_view's copy of a large message, and
                                * where a large frame cut by a timeout waits */
    size_t view_cap;
    uint32_t large_len;   /* > 0: a large frame's header was consumed... */
    size_t large_have;    /* ...and this many of its bytes wait in view */
    size_t rpos, rend;    /* unread bytes are rbuf[rpos, rend) */
    int streaming;        /* a one-way stream we kept up with (see read_size) */
    unsigned exact_reads; /* reads sized to the frame, while streaming */
    int bulk;             /* the last read while streaming took a pile */
    size_t last_len;      /* payload length of the last frame consumed */
    atomic_int replied;   /* a send since the last receive: request/response */
    int drained;          /* non-blocking: the last read came back short */
    uint8_t rbuf[SM_HEADER_LEN + SM_RECV_BUFFER];
};

int sm__options_resolve(sm_options *dst, const sm_options *opts)
{
    static const sm_options defaults;
    *dst = opts ? *opts : defaults;
    if (dst->connect_timeout_ms < 0 || dst->accept_timeout_ms < 0 || dst->send_timeout_ms < 0 ||
        dst->recv_timeout_ms < 0)
        return sm__error_set(SM_EINVAL, "options: timeouts must be >= 0");
    if (dst->max_frame == 0)
        dst->max_frame = SM_DEFAULT_MAX_FRAME;
    return 0;
}

/* A call's deadline: none to wait for at all on a non-blocking connection. */
static int64_t call_deadline(const sm_conn *c, int timeout_ms)
{
    return c->opt.nonblocking ? SM_NOW : sm__deadline(timeout_ms);
}

/* On a non-blocking connection, "the deadline passed" means "not now". */
static int would_block(const sm_conn *c, int rc)
{
    return c->opt.nonblocking && rc == SM_ETIMEDOUT ? SM_EAGAIN : rc;
}

/* sm__error_set, but SM_EAGAIN is no failure: it leaves sm_last_error()
 * alone, and a loop that meets it on every message pays nothing to format
 * a text no one reads. */
__attribute__((format(printf, 2, 3))) static int report(int rc, const char *fmt, ...)
{
    if (rc == SM_EAGAIN)
        return rc;
    char detail[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return sm__error_set(rc, "%s", detail);
}

int sm__conn_new(int fd, int family, const sm_options *opts, sm_tls *tls, sm_conn **out)
{
    int rc = sm__sock_set_nodelay(fd, family, opts->nagle);
    if (rc)
        return sm__error_set(rc, "setsockopt TCP_NODELAY");
    sm_conn *c = malloc(sizeof *c);
    if (!c)
        return sm__error_set(SM_ENOMEM, "new connection");
    rc = pthread_mutex_init(&c->send_lock, NULL);
    if (rc) {
        free(c);
        return sm__error_set(-rc, "new connection");
    }
    c->fd = c->out_fd = fd;
    c->plain = c->connecting = c->connect_error = c->handshaking = 0;
    c->tls = tls;
    /* Non-blocking, the handshake is done by the calls that follow; a
     * server's starts by reading the client's hello. */
    c->handshaking = tls && opts->nonblocking;
    c->tls_want = POLLIN;
    c->opt = *opts;
    c->opt.tls = NULL; /* the caller's; the session holds what it needs */
    c->send_error = c->recv_error = 0;
    c->held = c->view = NULL;
    c->held_len = c->held_cap = c->view_cap = 0;
    c->large_len = 0;
    c->large_have = 0;
    c->streaming = 0;
    c->exact_reads = 0;
    c->bulk = 0;
    c->last_len = 0;
    c->drained = 0;
    atomic_init(&c->replied, 0);
    atomic_init(&c->holding, 0);
    c->rpos = c->rend = 0;
    *out = c;
    return 0;
}

/* Prepares one adopted fd: close-on-exec like every fd of the library's,
 * and, unless a socket, non-blocking (read and writev have no
 * MSG_DONTWAIT: deadlines go through poll).  Returns 1 for a socket, 0
 * for another stream, or -errno. */
static int adopt_fd(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    if (S_ISSOCK(st.st_mode))
        return 1;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

SM_API int sm_conn_adopt(sm_conn **out, int read_fd, int write_fd, const sm_options *opts)
{
    if (out)
        *out = NULL;
    if (!out || read_fd < 0 || write_fd < 0)
        return sm__error_set(SM_EINVAL, "sm_conn_adopt: NULL out or negative fd");
    sm_options opt;
    int rc = sm__options_resolve(&opt, opts);
    if (rc)
        return rc;
    int reader = adopt_fd(read_fd);
    int writer = write_fd == read_fd ? reader : adopt_fd(write_fd);
    if (reader < 0 || writer < 0)
        return sm__error_set(reader < 0 ? reader : writer, "sm_conn_adopt");
    if (reader != writer)
        return sm__error_set(SM_EINVAL, "sm_conn_adopt: a socket and a non-socket");
    struct sockaddr_storage ss = { 0 };
    socklen_t len = sizeof ss;
    if (reader && getsockname(read_fd, (struct sockaddr *)&ss, &len) < 0)
        return sm__error_set(-errno, "sm_conn_adopt: getsockname");
    if (opt.tls)
        return sm__error_set(SM_EINVAL, "sm_conn_adopt: TLS over an adopted descriptor");
    sm_conn *c = NULL;
    rc = sm__conn_new(read_fd, reader ? ss.ss_family : AF_UNSPEC, &opt, NULL, &c);
    if (rc || !c)
        return rc ? rc : SM_ENOMEM;
    c->out_fd = write_fd;
    c->plain = !reader;
    *out = c;
    return 0;
}

static int connect_unix(const sm_addr *a, int64_t deadline)
{
    int fd = sm__socket(AF_UNIX, 0);
    if (fd < 0)
        return fd;
    int rc =
        sm__sock_connect_unix(fd, (const struct sockaddr *)&a->unix_addr, a->unix_len, deadline);
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
    int rc = sm__addr_resolve(a, 0, &list);
    if (rc)
        return rc;
    rc = -EADDRNOTAVAIL;
    char tried[SM_ADDRSTRLEN] = "";
    for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
        sm__addr_format(ai->ai_addr, ai->ai_addrlen, tried, sizeof tried);
        int fd = sm__socket(ai->ai_family, 0);
        if (fd < 0) {
            rc = fd;
            continue;
        }
        rc = sm__sock_connect(fd, ai->ai_addr, ai->ai_addrlen, sm__deadline(timeout_ms));
        if (rc == 0) {
            *family = ai->ai_family;
            freeaddrinfo(list);
            return fd;
        }
        close(fd);
    }
    freeaddrinfo(list);
    if (strcmp(tried, text) == 0)
        return sm__error_set(rc, "connect to %s", text);
    return sm__error_set(rc, "connect to %s (%s)", tried, text);
}

/* Starts a non-blocking connect to the first address: one fd from start to
 * finish, so the caller's poll keeps watching the right one.  Returns the
 * fd, with *pending set while the connect is in progress, or an error. */
static int start_connect(const sm_addr *a, const char *text, int *family, int *pending)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->unix_addr;
    socklen_t sa_len = a->unix_len;
    struct addrinfo *list = NULL;
    *family = AF_UNIX;
    if (!a->is_unix) {
        int rc = sm__addr_resolve(a, 0, &list);
        if (rc)
            return rc;
        sa = list->ai_addr;
        sa_len = list->ai_addrlen;
        *family = list->ai_family;
    }
    int fd = sm__socket(*family, SOCK_NONBLOCK);
    int rc = fd < 0 ? fd : connect(fd, sa, sa_len) == 0 ? 0 : -errno;
    if (list)
        freeaddrinfo(list);
    *pending = rc == -EINPROGRESS;
    if (rc == 0 || *pending)
        return fd;
    if (fd >= 0)
        close(fd);
    /* A Unix listener with a full backlog: nothing is in progress to wait for. */
    if (rc == -EAGAIN)
        rc = SM_EAGAIN;
    return sm__error_set(rc, "connect to %s", text);
}

/* A client TLS session on connected (or, non-blocking, connecting) fd.
 * A blocking connection does the handshake now, within the connect
 * timeout; a non-blocking one does it in later calls (finish_connect). */
static int start_tls(sm_tls **out, sm_tls_ctx *ctx, int fd, const sm_options *opt, const char *host,
                     int pending)
{
    int rc = sm__tls_new(out, ctx, fd, host);
    if (!rc && !opt->nonblocking && !pending) {
        rc = sm__set_nonblocking(fd); /* TLS waits through poll and the deadline */
        if (!rc)
            rc = sm__tls_handshake_wait(*out, fd, sm__deadline(opt->connect_timeout_ms));
    }
    if (rc) {
        sm__tls_free(*out);
        *out = NULL;
    }
    return rc;
}

/* The connected (or, non-blocking, connecting) stream to a. */
static int open_stream(const sm_addr *a, const char *text, const sm_options *opt, int *family,
                       int *pending)
{
    *family = AF_UNIX;
    *pending = 0;
    if (opt->nonblocking)
        return start_connect(a, text, family, pending);
    if (!a->is_unix)
        return connect_tcp(a, text, opt->connect_timeout_ms, family);
    int fd = connect_unix(a, sm__deadline(opt->connect_timeout_ms));
    return fd < 0 ? sm__error_set(fd, "connect to %s", text) : fd;
}

/* A client's TLS context, made before connecting so that a bad file is
 * the error reported, not the state of the network. */
static int client_tls(sm_tls_ctx **ctx, const sm_options *opt, const sm_addr *a)
{
    if (a->is_unix && !opt->tls->server_name && !opt->tls->insecure_skip_verify)
        return sm__error_set(SM_EINVAL, "TLS over a Unix socket needs server_name: there is "
                                        "no host name in the address to verify");
    return sm__tls_ctx_new(ctx, opt->tls, 0);
}

SM_API int sm_connect_opts(sm_conn **out, const char *addr, const sm_options *opts)
{
    if (!out || !addr)
        return sm__error_set(SM_EINVAL, "sm_connect: NULL argument");
    *out = NULL;
    sm_options opt;
    sm_addr a;
    int rc = sm__options_resolve(&opt, opts);
    if (!rc)
        rc = sm__addr_parse(&a, addr);
    if (rc)
        return rc;
    if (!a.is_unix && strcmp(a.port, "0") == 0)
        return sm__error_set(SM_EADDR, "connect to %s: port 0 is only for listening", addr);
    sm_tls_ctx *ctx = NULL;
    if (opt.tls && (rc = client_tls(&ctx, &opt, &a)) != 0)
        return rc;
    int family, pending;
    int fd = open_stream(&a, addr, &opt, &family, &pending);
    sm_tls *tls = NULL;
    if (fd >= 0 && ctx) {
        const char *host = a.is_unix ? NULL : a.host[0] ? a.host : "localhost";
        rc = start_tls(&tls, ctx, fd, &opt, host, pending);
        if (rc) {
            close(fd);
            fd = rc;
        }
    }
    sm__tls_ctx_unref(ctx); /* a session keeps its own reference */
    if (fd < 0)
        return fd;
    sm_conn *c = NULL;
    rc = sm__conn_new(fd, family, &opt, tls, &c);
    if (rc || !c) {
        sm__tls_free(tls);
        close(fd);
        return rc ? rc : SM_ENOMEM;
    }
    c->connecting = pending;
    c->handshaking = tls && opt.nonblocking;
    c->tls_want = POLLOUT;
    *out = c;
    return 0;
}

/* Whether a non-blocking connect has finished: 0 once connected,
 * SM_EAGAIN while in progress, or its error, which then sticks. */
/* The non-blocking TLS handshake, one step per call. */
static int finish_handshake(sm_conn *c)
{
    int rc = sm__tls_handshake(c->tls, &c->tls_want);
    if (rc == SM_EAGAIN)
        return rc;
    c->handshaking = 0;
    if (rc)
        c->send_error = c->recv_error = c->connect_error = rc;
    return rc;
}

static int finish_connect(sm_conn *c)
{
    if (!c->connecting)
        return c->handshaking ? finish_handshake(c) : c->connect_error;
    struct pollfd p = { .fd = c->fd, .events = POLLOUT };
    int n = poll(&p, 1, 0);
    if (n == 0)
        return SM_EAGAIN;
    int err = 0;
    socklen_t len = sizeof err;
    if (n < 0 || getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    c->connecting = 0;
    if (err)
        c->send_error = c->recv_error = c->connect_error = -err;
    if (!err && c->handshaking)
        return finish_handshake(c);
    return -err;
}

SM_API int sm_conn_connected(sm_conn *c)
{
    if (!c)
        return sm__error_set(SM_EINVAL, "sm_conn_connected: NULL connection");
    int rc = finish_connect(c);
    return rc && rc != SM_EAGAIN ? sm__error_set(rc, "connect") : rc;
}

SM_API int sm_conn_events(const sm_conn *c)
{
    if (!c)
        return 0;
    if (c->connecting)
        return SM_WANT_WRITE;
    if (c->handshaking)
        return c->tls_want == POLLIN ? SM_WANT_READ : SM_WANT_WRITE;
    return SM_WANT_READ |
           (atomic_load_explicit(&c->holding, memory_order_relaxed) ? SM_WANT_WRITE : 0);
}

/* Whether another try could connect: the peer was not there yet, or was
 * busy; not when the address or the arguments are wrong. */
static int worth_retrying(int rc)
{
    return rc != SM_EINVAL && rc != SM_EADDR && rc != SM_ENOMEM && rc != -EACCES && rc != -EPERM &&
           rc != -EAFNOSUPPORT && rc != -EPROTONOSUPPORT && rc != SM_ETLS && rc != SM_EVERIFY &&
           rc != SM_ENOTLS;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

SM_API int sm_connect_retry(sm_conn **out, const char *addr, const sm_options *opts,
                            int max_wait_ms)
{
    if (max_wait_ms < 0)
        return sm__error_set(SM_EINVAL, "sm_connect_retry: negative wait");
    int64_t until = max_wait_ms ? sm__now_ms() + max_wait_ms : INT64_MAX;
    sm_backoff b;
    sm__backoff_init(&b, 0, 0);
    sm_options o;
    int rc = sm__options_resolve(&o, opts), cause = 0;
    if (rc)
        return rc;
    for (;;) {
        /* Each try ends within what is left of max_wait_ms too. */
        int64_t left = until - sm__now_ms();
        if (max_wait_ms && (o.connect_timeout_ms == 0 || o.connect_timeout_ms > left))
            o.connect_timeout_ms = left > 0 ? (int)left : 1;
        rc = sm_connect_opts(out, addr, &o);
        if (!rc || !worth_retrying(rc))
            return rc;
        if (rc != SM_ETIMEDOUT || !cause)
            cause = rc; /* a try cut short by max_wait_ms is not the cause */
        left = until - sm__now_ms();
        if (left <= 0)
            return sm__error_set(cause, "connect to %s: gave up after %d ms", addr, max_wait_ms);
        int wait = sm__backoff_next(&b);
        sleep_ms(wait < left ? wait : (int)left);
    }
}

SM_API int sm_connect(sm_conn **out, const char *addr)
{
    return sm_connect_opts(out, addr, NULL);
}

/* Takes the send lock within the deadline, so a thread queued behind
 * another thread's slow send still returns in time.  (timedlock counts on
 * CLOCK_REALTIME; the wait is converted from the monotonic deadline.) */
static int lock_send(sm_conn *c, int64_t deadline)
{
    if (deadline < 0)
        return -pthread_mutex_lock(&c->send_lock);
    int64_t left = deadline - sm__now_ms();
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (left > 0) {
        until.tv_sec += left / 1000;
        until.tv_nsec += (long)(left % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    int rc = pthread_mutex_timedlock(&c->send_lock, &until);
    return rc == ETIMEDOUT ? SM_ETIMEDOUT : -rc;
}

/* Everything held was written: the buffer goes back to its usual size. */
static void release_held(sm_conn *c)
{
    c->held_len = 0;
    if (c->held_cap > SM_SEND_BUFFER) {
        free(c->held);
        c->held = NULL;
        c->held_cap = 0;
    }
    atomic_store_explicit(&c->holding, 0, memory_order_relaxed);
}

/* Makes the held buffer hold at least cap bytes; keeps its contents. */
static int reserve_held(sm_conn *c, size_t cap)
{
    if (cap <= c->held_cap)
        return 0;
    uint8_t *p = realloc(c->held, cap);
    if (!p)
        return SM_ENOMEM;
    c->held = p;
    c->held_cap = cap;
    return 0;
}

/* After a timeout, keeps the unwritten bytes of what was started: the held
 * bytes, or the new frame (iov, total bytes) once its first byte went out.
 * Returns 1 if the new frame was started, 0 if not, or SM_EBROKEN when
 * its rest cannot be kept (then the stream is cut for good). */
static int keep_unwritten(sm_conn *c, const struct iovec *iov, int count, size_t total, size_t sent)
{
    /* Over TLS, a write that reached the new frame may have left part of
     * it inside OpenSSL, which must be given the same bytes again: the
     * frame counts as started. */
    int reached = count && c->tls && sent == c->held_len;
    if (sent <= c->held_len && !reached) {
        if (sent)
            memmove(c->held, c->held + sent, c->held_len - sent);
        c->held_len -= sent;
        return 0;
    }
    size_t skip = sent - c->held_len, rest = total - skip;
    c->held_len = 0;
    if (reserve_held(c, rest))
        return SM_EBROKEN;
    for (int i = 0; i < count; i++) {
        size_t from = skip < iov[i].iov_len ? skip : iov[i].iov_len;
        memcpy(c->held + c->held_len, (const uint8_t *)iov[i].iov_base + from,
               iov[i].iov_len - from);
        c->held_len += iov[i].iov_len - from;
        skip -= from;
    }
    return 1;
}

/* Writes the held bytes, then the frame in iov[0..count); send_lock held.
 * A frame goes out whole or not at all: once its first byte is written, a
 * timeout keeps the rest held for the next call, and the call succeeds.
 * Returns 0, SM_ETIMEDOUT (the new frame was not started; nothing is
 * lost), or the sticky error of a stream cut by a failure. */
static int write_frames(sm_conn *c, const struct iovec *iov, int count, int64_t deadline)
{
    if (c->send_error)
        return c->send_error;
    struct iovec all[3] = { { c->held, c->held_len } };
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        all[i + 1] = iov[i];
        total += iov[i].iov_len;
    }
    int first = c->held_len ? 0 : 1;
    size_t sent = 0;
    int rc = c->tls
                 ? sm__tls_write_all(c->tls, c->fd, all + first, count + 1 - first, deadline, &sent)
                 : sm__io_write_all(c->out_fd, c->plain, all + first, count + 1 - first, deadline,
                                    &sent);
    if (rc == 0) {
        release_held(c);
        return 0;
    }
    if (rc == SM_ETIMEDOUT) {
        int started = keep_unwritten(c, iov, count, total, sent);
        atomic_store_explicit(&c->holding, c->held_len > 0, memory_order_relaxed);
        if (started < 0)
            rc = c->send_error = started;
        return started == 1 ? 0 : rc;
    }
    if (sent > 0)
        c->send_error = rc;
    return rc;
}

/* Appends one frame to the held bytes; send_lock held. */
static int hold_frame(sm_conn *c, const uint8_t *header, const void *msg, size_t len)
{
    size_t need = c->held_len + SM_HEADER_LEN + len;
    if (reserve_held(c, need > SM_SEND_BUFFER ? need : SM_SEND_BUFFER))
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
        return sm__error_set(SM_EINVAL, "sm_send: NULL argument or unknown flag");
    if (len > UINT32_MAX)
        return sm__error_set(SM_ETOOBIG, "sm_send: %zu bytes", len);
    uint8_t header[SM_HEADER_LEN];
    sm_frame_header_put(header, (uint32_t)len);
    struct iovec frame[2] = { { header, sizeof header }, { (void *)msg, len } };

    int64_t deadline = call_deadline(c, c->opt.send_timeout_ms);
    int rc = lock_send(c, deadline);
    if (rc)
        return report(would_block(c, rc), "send %zu bytes: another thread sends", len);
    rc = finish_connect(c);
    if (!rc)
        rc = c->send_error;
    if (!rc && (flags & SM_MORE) && c->held_len + SM_HEADER_LEN + len <= SM_SEND_BUFFER)
        rc = hold_frame(c, header, msg, len);
    else if (!rc)
        rc = write_frames(c, frame, 2, deadline);
    /* Non-blocking: what the socket cannot take now waits in the held
     * buffer, up to SM_SEND_BUFFER bytes (or one larger frame alone). */
    if (rc == SM_ETIMEDOUT && c->opt.nonblocking &&
        (!c->held_len || c->held_len + SM_HEADER_LEN + len <= SM_SEND_BUFFER))
        rc = hold_frame(c, header, msg, len);
    pthread_mutex_unlock(&c->send_lock);
    if (rc)
        return report(would_block(c, rc), "send %zu bytes", len);
    atomic_store_explicit(&c->replied, 1, memory_order_relaxed);
    return 0;
}

SM_API int sm_send(sm_conn *c, const void *msg, size_t len)
{
    return sm_send_flags(c, msg, len, 0);
}

SM_API int sm_flush(sm_conn *c)
{
    if (!c)
        return sm__error_set(SM_EINVAL, "sm_flush: NULL connection");
    int64_t deadline = call_deadline(c, c->opt.send_timeout_ms);
    int rc = lock_send(c, deadline);
    if (rc)
        return report(would_block(c, rc), "flush: another thread sends");
    rc = finish_connect(c);
    if (!rc)
        rc = c->held_len ? write_frames(c, NULL, 0, deadline) : c->send_error;
    pthread_mutex_unlock(&c->send_lock);
    return rc ? report(would_block(c, rc), "flush held messages") : 0;
}

/* A receive writes held messages: the reply may depend on them.  It
 * writes what the socket takes now and reads meanwhile (conn_read), since
 * waiting for all of it to go out first could deadlock against a peer
 * that is itself blocked writing to us.  If another thread holds the send
 * lock, it is sending: a plain send takes the held frames along, and a
 * batch it is still adding to is its own to end.  Returns 1 if held bytes
 * remain for this receive to write, 0 if not, or the write's error. */
static int flush_some(sm_conn *c)
{
    if (!atomic_load_explicit(&c->holding, memory_order_relaxed))
        return 0;
    if (pthread_mutex_trylock(&c->send_lock) != 0)
        return 0;
    int rc = c->held_len ? write_frames(c, NULL, 0, SM_NOW) : 0;
    int left = c->held_len > 0;
    pthread_mutex_unlock(&c->send_lock);
    if (rc && rc != SM_ETIMEDOUT)
        return sm__error_set(rc, "flush held messages");
    return left;
}

/* Records a receive failure; all but a resumable timeout stick. */
static int recv_fail(sm_conn *c, int rc, int resumable, const char *what)
{
    if (!(resumable && rc == SM_ETIMEDOUT))
        c->recv_error = rc;
    if (rc == SM_ETLS || rc == SM_EVERIFY)
        return rc; /* sm_last_error() keeps OpenSSL's reason, set by the TLS layer */
    return report(would_block(c, rc), "receive %s", what);
}

/* Ensures `need` bytes (at most sizeof rbuf) are buffered, reading as much
 * as fits so one read can bring many small frames.  Returns 0, SM_ECLOSED
 * (end of stream with nothing buffered), SM_ETRUNCATED (end of stream with
 * a partial frame buffered), SM_ETIMEDOUT or -errno. */
/* How much to ask the kernel for.  As much as fits, so a read brings many
 * frames, except in one case: a one-way stream of frames (nothing sent
 * since the last receive) that we have kept up with.  A reader that drains
 * the socket sleeps, and the next send must wake it: tens of microseconds,
 * for every message.  So there it reads just what each frame needs, and
 * every 16th read asks the kernel how much is waiting (FIONREAD, no copy):
 * a pile is taken in bulk but for KEEP_FRAMES, so the reader stays a little
 * behind the sender and finds the next frame already there. */
/* What a bulk read leaves in the kernel: a few frames of the size the
 * stream has. */
static size_t keep(const sm_conn *c)
{
    return KEEP_FRAMES * (SM_HEADER_LEN + c->last_len);
}

static size_t read_size(sm_conn *c, size_t need)
{
    size_t full = sizeof c->rbuf - c->rend, have = c->rend - c->rpos;
    /* (TLS hands over whole records: the kernel's count means nothing.) */
    if (!c->streaming || c->tls || atomic_load_explicit(&c->replied, memory_order_relaxed))
        return full;
    /* Right after a bulk read, look again: a pile tends to keep coming. */
    int waiting = 0;
    if ((c->bulk || ++c->exact_reads % 16 == 0) && ioctl(c->fd, FIONREAD, &waiting) == 0 &&
        (size_t)waiting > keep(c) + need - have) {
        size_t bulk = (size_t)waiting - keep(c);
        c->bulk = 1;
        return bulk < full ? bulk : full;
    }
    c->bulk = 0;
    return need - have;
}

/* One read from the stream, through TLS when there is a session.
 * Non-blocking, a read that came back short left the socket empty, so the
 * read right after it (a caller draining messages until SM_EAGAIN) would
 * only say so: that one is skipped, once.  The caller then polls, and
 * poll sees whatever came since.  (A TLS read returns one record at a
 * time: short says nothing there.) */
static ssize_t read_stream(sm_conn *c, void *buf, size_t len, int flags, int64_t deadline)
{
    if (c->tls)
        return sm__tls_read_wait(c->tls, c->fd, buf, len, deadline);
    int skip = c->drained && c->opt.nonblocking;
    c->drained = 0;
    if (skip)
        return SM_ETIMEDOUT;
    ssize_t n = sm__io_read(c->fd, c->plain, buf, len, flags, deadline);
    c->drained = c->opt.nonblocking && n > 0 && (size_t)n < len;
    return n;
}

/* A read that, while held frames wait, writes them as the socket takes
 * them and reads what comes meanwhile (see flush_some). */
static ssize_t conn_read(sm_conn *c, void *buf, size_t len, int flags, int64_t deadline)
{
    int held;
    while ((held = flush_some(c)) == 1) {
        ssize_t n = read_stream(c, buf, len, 0, SM_NOW);
        if (n != SM_ETIMEDOUT)
            return n;
        int rc = sm__wait_in_or_out(c->fd, c->out_fd, deadline);
        if (rc)
            return rc;
    }
    return held < 0 ? held : read_stream(c, buf, len, flags, deadline);
}

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
        ssize_t n = conn_read(c, c->rbuf + c->rend, read_size(c, need), 0, deadline);
        if (n == 0)
            return c->rend == c->rpos ? SM_ECLOSED : SM_ETRUNCATED;
        if (n < 0)
            return (int)n;
        c->rend += (size_t)n;
    }
    return 0;
}

/* Takes the buffered frame (header and len payload bytes) out of rbuf. */
static void consume(sm_conn *c, size_t len)
{
    c->rpos += SM_HEADER_LEN + len;
    c->last_len = len;
    /* A stream we kept up with stays one until we reply (see read_size). */
    c->streaming |= c->rpos == c->rend;
    atomic_store_explicit(&c->replied, 0, memory_order_relaxed);
}

/* Waits for the next header and returns its length, leaving the header
 * buffered so a caller may still decline the message. */
static int64_t next_length(sm_conn *c, int64_t deadline)
{
    if (c->recv_error)
        return c->recv_error;
    if (c->large_len)
        return c->large_len;
    int rc = fill(c, SM_HEADER_LEN, deadline);
    if (rc)
        return recv_fail(c, rc, 1, "header");
    uint32_t len = sm_frame_header_get(c->rbuf + c->rpos);
    if (len > c->opt.max_frame) {
        c->recv_error = SM_ETOOBIG;
        return sm__error_set(SM_ETOOBIG, "receive: peer announced %u bytes, max frame is %u", len,
                             c->opt.max_frame);
    }
    return len;
}

/* A large frame cut by a timeout: its bytes so far wait in c->view, so the
 * next receive, whichever call it is, resumes where this one stopped. */
static int park_large(sm_conn *c, const uint8_t *dst, uint32_t len, size_t done)
{
    if (dst != c->view && done > 0) {
        if (done > c->view_cap) {
            uint8_t *p = realloc(c->view, done);
            if (!p)
                return recv_fail(c, SM_EBROKEN, 0, "large payload: no memory to keep it");
            c->view = p;
            c->view_cap = done;
        }
        memcpy(c->view, dst, done);
    }
    c->large_len = len;
    c->large_have = done;
    return recv_fail(c, SM_ETIMEDOUT, 1, "large payload");
}

/* Starts or resumes a frame larger than rbuf, reading the rest straight
 * into dst. */
static int read_large(sm_conn *c, uint8_t *dst, uint32_t len, int64_t deadline)
{
    size_t done;
    if (c->large_len) {
        done = c->large_have;
        if (dst != c->view) {
            memcpy(dst, c->view, done);
            free(c->view);
            c->view = NULL;
            c->view_cap = 0;
        }
        c->large_len = 0;
    } else {
        c->rpos += SM_HEADER_LEN;
        done = c->rend - c->rpos;
        memcpy(dst, c->rbuf + c->rpos, done);
        c->rpos = c->rend = 0;
    }
    while (done < len) {
        ssize_t n = conn_read(c, dst + done, len - done, MSG_WAITALL, deadline);
        if (n == SM_ETIMEDOUT)
            return park_large(c, dst, len, done);
        if (n <= 0)
            return recv_fail(c, n == 0 ? SM_ETRUNCATED : (int)n, 0, "large payload");
        done += (size_t)n;
    }
    return 0;
}

/* Moves the payload of the next frame (header buffered, or a large frame
 * already begun) into dst. */
/* Reads a large frame into c->view, grown to hold it. */
static int gather_large(sm_conn *c, size_t len, int64_t deadline)
{
    if (len > c->view_cap) {
        /* realloc keeps the bytes of a frame a timeout cut. */
        uint8_t *p = realloc(c->view, len);
        if (!p)
            return sm__error_set(SM_ENOMEM, "receive: %zu bytes", len);
        c->view = p;
        c->view_cap = len;
    }
    return read_large(c, c->view, (uint32_t)len, deadline);
}

static int read_payload(sm_conn *c, uint8_t *dst, size_t len, int64_t deadline)
{
    if (len > SM_RECV_BUFFER && (!c->opt.nonblocking || dst == c->view))
        return read_large(c, dst, (uint32_t)len, deadline);
    if (len > SM_RECV_BUFFER) {
        /* Non-blocking, a large frame comes over many calls: it gathers in
         * c->view, so a call that returns SM_EAGAIN copies nothing, and is
         * copied out once, whole. */
        int rc = gather_large(c, len, deadline);
        if (!rc) {
            memcpy(dst, c->view, len);
            free(c->view);
            c->view = NULL;
            c->view_cap = 0;
        }
        return rc;
    }
    /* Gather the whole frame before consuming any of it, so a timeout here
     * loses nothing. */
    int rc = fill(c, SM_HEADER_LEN + len, deadline);
    if (rc)
        return recv_fail(c, rc, 1, "payload");
    if (len)
        memcpy(dst, c->rbuf + c->rpos + SM_HEADER_LEN, len);
    consume(c, len);
    return 0;
}

/* What every receive does first: write held frames, start the timeout,
 * and wait for the next header.  Returns its length or an error. */
static int64_t begin_receive(sm_conn *c, int64_t *deadline)
{
    int rc = finish_connect(c);
    if (!rc)
        rc = flush_some(c);
    if (rc < 0)
        return rc;
    *deadline = call_deadline(c, c->opt.recv_timeout_ms);
    return next_length(c, *deadline);
}

SM_API ssize_t sm_recv(sm_conn *c, void *buf, size_t cap)
{
    if (!c || (!buf && cap))
        return sm__error_set(SM_EINVAL, "sm_recv: NULL argument");
    int64_t deadline = -1;
    int64_t len = begin_receive(c, &deadline);
    if (len < 0)
        return (ssize_t)len;
    if ((uint64_t)len > cap)
        return sm__error_set(SM_EMSGSIZE, "receive: message of %lld bytes, buffer holds %zu",
                             (long long)len, cap);
    int rc = read_payload(c, buf, (size_t)len, deadline);
    return rc ? rc : (ssize_t)len;
}

SM_API ssize_t sm_recv_alloc(sm_conn *c, void **msg)
{
    if (!msg)
        return sm__error_set(SM_EINVAL, "sm_recv_alloc: NULL argument");
    *msg = NULL;
    if (!c)
        return sm__error_set(SM_EINVAL, "sm_recv_alloc: NULL argument");
    int64_t deadline = -1;
    int64_t len = begin_receive(c, &deadline);
    if (len < 0)
        return (ssize_t)len;
    if (len > SM_RECV_BUFFER && c->opt.nonblocking) {
        /* Gathered as read_payload does; then the buffer itself is handed over. */
        int rc = gather_large(c, (size_t)len, deadline);
        if (rc)
            return rc;
        *msg = c->view;
        c->view = NULL;
        c->view_cap = 0;
        return (ssize_t)len;
    }
    uint8_t *p = malloc(len ? (size_t)len : 1);
    if (!p)
        return sm__error_set(SM_ENOMEM, "receive: %lld bytes", (long long)len);
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
    consume(c, len);
    return 0;
}

/* A large frame cannot be viewed in rbuf: it goes to a buffer of the
 * connection's, kept while messages stay large. */
static int view_large(sm_conn *c, size_t len, int64_t deadline, const void **msg)
{
    int rc = gather_large(c, len, deadline);
    if (!rc)
        *msg = c->view;
    return rc;
}

SM_API ssize_t sm_recv_view(sm_conn *c, const void **msg)
{
    if (!msg)
        return sm__error_set(SM_EINVAL, "sm_recv_view: NULL argument");
    *msg = NULL;
    if (!c)
        return sm__error_set(SM_EINVAL, "sm_recv_view: NULL argument");
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
    /* A large frame already begun is never whole in rbuf. */
    size_t have = c && !c->large_len ? c->rend - c->rpos : 0;
    return have >= SM_HEADER_LEN && have - SM_HEADER_LEN >= sm_frame_header_get(c->rbuf + c->rpos);
}

SM_API int sm_conn_set_options(sm_conn *c, const sm_options *opts)
{
    sm_options opt;
    if (!c)
        return sm__error_set(SM_EINVAL, "sm_conn_set_options: NULL connection");
    int rc = sm__options_resolve(&opt, opts);
    if (rc)
        return rc;
    if (opt.nagle != c->opt.nagle && !c->plain) {
        struct sockaddr_storage ss = { 0 };
        socklen_t len = sizeof ss;
        if (getsockname(c->fd, (struct sockaddr *)&ss, &len) < 0)
            return sm__error_set(-errno, "getsockname");
        rc = sm__sock_set_nodelay(c->fd, ss.ss_family, opt.nagle);
        if (rc)
            return sm__error_set(rc, "setsockopt TCP_NODELAY");
    }
    c->opt = opt;
    return 0;
}

SM_API int sm_conn_peer(const sm_conn *c, char *buf, size_t len)
{
    if (!c || !buf)
        return sm__error_set(SM_EINVAL, "sm_conn_peer: NULL argument");
    return sm__addr_of_fd(c->fd, 1, buf, len);
}

SM_API int sm_conn_peer_cert(const sm_conn *c, char *buf, size_t len)
{
    if (!c || !buf)
        return sm__error_set(SM_EINVAL, "sm_conn_peer_cert: NULL argument");
    if (!c->tls)
        return sm__error_set(SM_EVERIFY, "sm_conn_peer_cert: not a TLS connection");
    return sm__tls_peer_subject(c->tls, buf, len);
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
    sm__tls_free(c->tls);
    close(c->fd);
    if (c->out_fd != c->fd)
        close(c->out_fd);
    pthread_mutex_destroy(&c->send_lock);
    free(c->held);
    free(c->view);
    free(c);
}
