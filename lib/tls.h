/* tls - OpenSSL under connections: a context from sm_tls_options, and
 * handshakes, reads and writes on a non-blocking socket that report like
 * the sockets layer (SM_ codes; SM_EAGAIN says which readiness to wait
 * for).  Built without OpenSSL (make TLS=0), every call is SM_ENOTLS. */
#ifndef SM_LIB_TLS_H
#define SM_LIB_TLS_H

#include <sockmsg/sockmsg.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct sm_tls_ctx sm_tls_ctx; /* shared, reference-counted */
typedef struct sm_tls sm_tls;         /* one connection's session */

/* A context for clients (server 0) or servers.  Returns 0, SM_ENOTLS,
 * SM_EINVAL (a server without a certificate) or SM_ETLS (files unreadable;
 * sm_last_error() says why). */
int sm__tls_ctx_new(sm_tls_ctx **out, const sm_tls_options *o, int server);
sm_tls_ctx *sm__tls_ctx_ref(sm_tls_ctx *ctx);
void sm__tls_ctx_unref(sm_tls_ctx *ctx);

/* How long a server waits for a handshake (the options', or 10 s). */
int sm__tls_ctx_handshake_ms(const sm_tls_ctx *ctx);

/* A session on connected socket fd; host (a client's) is the name or
 * address to verify, unless the options name another.  Returns 0,
 * SM_ENOMEM or SM_ETLS. */
int sm__tls_new(sm_tls **out, sm_tls_ctx *ctx, int fd, const char *host);

/* Sends close_notify (once, never waiting) and frees the session. */
void sm__tls_free(sm_tls *t);

/* One step of the handshake: 0 when done, SM_EAGAIN with *want set to
 * POLLIN or POLLOUT, SM_EVERIFY or SM_ETLS (sm_last_error() has OpenSSL's
 * reason), or -errno. */
int sm__tls_handshake(sm_tls *t, short *want);

/* The whole handshake within the deadline (blocking connections). */
int sm__tls_handshake_wait(sm_tls *t, int fd, int64_t deadline);

/* One read or write of plaintext: bytes (> 0), 0 when the peer closed
 * (reads), SM_EAGAIN with *want, SM_ETLS or -errno. */
ssize_t sm__tls_read(sm_tls *t, void *buf, size_t len, short *want);
ssize_t sm__tls_write(sm_tls *t, const void *buf, size_t len, short *want);

/* As sm__io_read and sm__io_write_all, over TLS on fd: wait up to the
 * deadline (SM_NOW: never). */
ssize_t sm__tls_read_wait(sm_tls *t, int fd, void *buf, size_t len, int64_t deadline);
int sm__tls_write_all(sm_tls *t, int fd, struct iovec *iov, int iovcnt, int64_t deadline,
                      size_t *sent);

/* The verified peer certificate's subject, as sm_conn_peer_cert. */
int sm__tls_peer_subject(const sm_tls *t, char *buf, size_t len);

#endif
