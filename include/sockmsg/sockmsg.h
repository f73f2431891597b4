/*
 * libsockmsg - whole messages over TCP and Unix-domain sockets.
 *
 * Every message travels as a frame: a 4-byte unsigned big-endian length N,
 * then N bytes of payload (docs/PROTOCOL.md is the normative text).
 *
 * Errors: every call that can fail returns a negative int (or ssize_t).
 * The library's own causes are the SM_E* codes (enum sm_error, declared
 * in sockmsg/frame.h, included here); any other negative
 * value is a system error and equals -errno (so -rc is the errno value).
 * sm_strerror(rc) names the cause; sm_last_error() adds the detail of the
 * last failure on the calling thread (which address, which size).
 *
 * Threads: different handles may be used from different threads freely.
 * On one connection, any number of threads may call sm_send at once (frames never
 * interleave on the wire) while one thread at a time calls the receive
 * functions.  sm_close must not race with any other call on the same handle.
 *
 * The library never raises SIGPIPE, retries calls interrupted by signals,
 * and opens every descriptor close-on-exec.
 */
#ifndef SOCKMSG_SOCKMSG_H
#define SOCKMSG_SOCKMSG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The library's error codes (enum sm_error) and the frame codec: frame.h
 * also stands alone, for programs that use the codec without the library. */
#include <sockmsg/frame.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version: the Makefile reads it from here, so it lives in one place. */
#define SM_VERSION_MAJOR 0
#define SM_VERSION_MINOR 1
#define SM_VERSION_PATCH 0

#if defined(__GNUC__) && defined(SM_BUILDING_LIBRARY)
#define SM_API __attribute__((visibility("default")))
#else
#define SM_API
#endif

/* Default largest payload a connection accepts: 16 MiB. */
#define SM_DEFAULT_MAX_FRAME (16u * 1024u * 1024u)

/* Messages up to this size are gathered in the connection's own buffer;
 * larger payloads are read straight into the caller's memory. */
#define SM_RECV_BUFFER (64u * 1024u)

/* SM_MORE frames are held back, up to this many bytes in all (headers
 * included), then written in one system call. */
#define SM_SEND_BUFFER (64u * 1024u)

/* sm_send_flags: more messages follow at once (see there). */
#define SM_MORE 1

/* Longest address string the library writes (see sm_listener_addr). */
#define SM_ADDRSTRLEN 128

typedef struct sm_listener sm_listener;
typedef struct sm_conn sm_conn;

/*
 * TLS (OpenSSL), for sm_options.tls and sm_server_listen_tls.  A zeroed
 * struct is a client that verifies the server against the system's CA
 * store and the host in the address.  The framing inside TLS is the same,
 * so Python's ssl, Java's SSLSocket or Node's tls speak it unchanged.
 * The strings are copied when used; they need not outlive the call.
 * Clients reuse the context made at their last connect while the options
 * and the files they name are unchanged on disk (a file changed in the
 * last 3 s is read again every time): a renewed CA file or certificate
 * takes effect on the next connect.
 */
typedef struct sm_tls_options {
    const char *ca_file;      /* PEM file of CAs to verify the peer against (a
                               * server with it asks clients for a certificate) */
    const char *ca_dir;       /* or a c_rehash'ed directory; neither: system store */
    const char *cert_file;    /* own certificate chain (PEM): a server's, or a
                            * client's for mutual TLS */
    const char *key_file;     /* its private key (PEM) */
    const char *server_name;  /* client: the name to verify (and send as SNI);
                              * NULL: the host of the address.  Over a Unix
                              * socket there is none: set it, or connecting
                              * fails with SM_EINVAL */
    int require_client_cert;  /* server: mutual TLS, clients must present a
                              * certificate that verifies against ca_file */
    int insecure_skip_verify; /* client: do NOT verify the server.  Anyone on
                               * the path can then read and change everything:
                               * for tests against a self-signed server only */
    int handshake_timeout_ms; /* server: a handshake not done by then is
                               * closed; 0 = 10 s (blocking connections use
                               * their connect/accept timeouts) */
} sm_tls_options;

/* sm_tls_available - 1 if this libsockmsg was built with OpenSSL (TLS
 * calls work), 0 if not (they fail with SM_ENOTLS). */
SM_API int sm_tls_available(void);

/*
 * Options.  A zeroed struct means "all defaults", so set only what you need:
 *
 *     sm_options opt = { .recv_timeout_ms = 500 };
 *
 * Timeouts are in milliseconds; 0 means wait forever (the default).  A
 * timeout bounds the whole call, however many reads or writes it takes,
 * and expiring returns SM_ETIMEDOUT.
 */
typedef struct sm_options {
    int connect_timeout_ms;    /* sm_connect_opts: per address tried; not
                             * name resolution (see sm_connect) */
    int accept_timeout_ms;     /* sm_accept */
    int send_timeout_ms;       /* sm_send */
    int recv_timeout_ms;       /* sm_recv, sm_recv_alloc, sm_recv_view */
    uint32_t max_frame;        /* largest payload accepted; 0 = 16 MiB */
    int nagle;                 /* nonzero leaves Nagle on; default sets TCP_NODELAY */
    const sm_tls_options *tls; /* non-NULL: TLS on the connection (connect,
                                * listen and accept); copied when used */
    int nonblocking;           /* nonzero: no call ever waits; it returns
                             * SM_EAGAIN instead and the timeouts above are
                             * unused (see sm_conn_events) */
} sm_options;

/*
 * Addresses are strings:
 *   "host:port"     a name or IPv4 address; names resolve via getaddrinfo
 *   "[v6addr]:port" an IPv6 address
 *   ":port"         listen: all interfaces, IPv4 and IPv6; connect: localhost
 *   "unix:/path"    a Unix-domain stream socket
 * Port 0 in sm_listen picks a free port; sm_listener_addr tells which.
 */

/*
 * sm_listen, sm_listen_opts - open a listening socket on addr.
 *
 * On success stores a new listener in *out (free it with sm_listener_close)
 * and returns 0.  Sets SO_REUSEADDR, so a restarted server rebinds its port
 * at once.  For "unix:/path", a stale socket file at path is replaced, and
 * the file is removed again by sm_listener_close.  opts may be NULL; the
 * options are inherited by every accepted connection.  Does not block.
 *
 * Errors: SM_EINVAL (NULL out or addr), SM_EADDR (malformed, unresolvable,
 * or a Unix path too long), SM_ENOMEM, -errno (e.g. -EADDRINUSE, -EACCES).
 */
SM_API int sm_listen(sm_listener **out, const char *addr);
SM_API int sm_listen_opts(sm_listener **out, const char *addr, const sm_options *opts);

/*
 * sm_accept - wait for a client and return its connection in *out.
 *
 * Blocks until a client connects or accept_timeout_ms expires; with the
 * listener's options nonblocking, returns SM_EAGAIN at once when no client
 * waits (poll sm_listener_fd for POLLIN).  The new connection (free it
 * with sm_close) has the listener's options.
 *
 * Errors: SM_EINVAL, SM_ETIMEDOUT, SM_EAGAIN, SM_ENOMEM, -errno (-EMFILE
 * when the process is out of file descriptors: the client stays queued).
 */
SM_API int sm_accept(sm_listener *l, sm_conn **out);

/*
 * sm_listener_addr - write the listener's bound address into buf.
 *
 * The form is one sm_connect accepts: "127.0.0.1:41234", "[::]:41234",
 * "unix:/tmp/s".  Returns the string's length, or SM_EINVAL if buf is NULL
 * or len is too small (SM_ADDRSTRLEN always suffices), or -errno.
 */
SM_API int sm_listener_addr(const sm_listener *l, char *buf, size_t len);

/* sm_listener_fd - the listening descriptor, for poll().  Still owned by l. */
SM_API int sm_listener_fd(const sm_listener *l);

/* sm_listener_close - close the listener (NULL is ignored).  Connections
 * already accepted stay open. */
SM_API void sm_listener_close(sm_listener *l);

/*
 * sm_connect, sm_connect_opts - connect to addr.
 *
 * Tries each address a name resolves to, in order, until one accepts; each
 * try is bounded by connect_timeout_ms.  On success stores a new connection
 * in *out (free it with sm_close) and returns 0.  opts may be NULL.  Blocks.
 * For "unix:/path", a listener whose backlog is full is waited for, up to
 * connect_timeout_ms (forever with 0), as for TCP.
 *
 * Name resolution is not bounded by connect_timeout_ms: getaddrinfo has no
 * timeout of its own, and bounding it would take a resolver thread per
 * call.  The system resolver gives up by itself (resolv.conf "options
 * timeout:N attempts:N"; glibc's default is 5 s per try, 2 tries per
 * server).  A numeric address ("127.0.0.1:80", "[::1]:80") never waits.
 *
 * Errors: SM_EINVAL, SM_EADDR, SM_ETIMEDOUT, SM_ENOMEM, -errno of the last
 * address tried (-ECONNREFUSED: nobody listens there).  sm_last_error()
 * names the address.
 */
SM_API int sm_connect(sm_conn **out, const char *addr);
SM_API int sm_connect_opts(sm_conn **out, const char *addr, const sm_options *opts);

/*
 * sm_connect_retry - sm_connect_opts, tried again while the peer is not
 * there yet (refused, unreachable, timed out, a Unix socket not yet made,
 * a full backlog), with the same backoff as the server's dialled links:
 * waits from 100 ms, doubling with jitter up to 5 s, for at most
 * max_wait_ms in all (0: until it connects).  For a client that must
 * survive a server restart: when a call fails with SM_ECLOSED or -errno,
 * sm_close the connection and call this again.  Blocks.
 *
 * Errors: as sm_connect_opts; after max_wait_ms, the last try's error.
 * Wrong arguments and addresses (SM_EINVAL, SM_EADDR) are not retried.
 */
SM_API int sm_connect_retry(sm_conn **out, const char *addr, const sm_options *opts,
                            int max_wait_ms);

/*
 * sm_conn_adopt - make a connection of a byte stream you already have.
 *
 * read_fd and write_fd are one descriptor for a connected socket (from
 * socketpair, accept, or inherited from a parent process) or a serial port
 * set to raw mode (cfmakeraw), or the two ends of a pipe pair.  The frames
 * and every call work as on a connection from sm_connect.  On success the
 * connection owns the descriptors: sm_close closes them (once, if equal).
 * Both are made close-on-exec; a descriptor that is not a socket is made
 * non-blocking, so timeouts can be kept.  opts may be NULL.  Does not
 * block.  On failure the descriptors stay yours, unchanged but for those
 * flags.
 *
 * Errors: SM_EINVAL (NULL out, a negative fd, or a socket paired with a
 * non-socket), SM_ENOMEM, -errno (-EBADF: not an open descriptor).
 */
SM_API int sm_conn_adopt(sm_conn **out, int read_fd, int write_fd, const sm_options *opts);

/*
 * sm_send - send len bytes from msg as one message.
 *
 * Blocks until the whole frame is handed to the kernel or send_timeout_ms
 * expires; the timeout bounds the whole call, including the wait for
 * other threads sending on c.  msg stays the caller's.  Safe to call from
 * several threads at once on one connection; frames never interleave.
 *
 * A frame goes out whole or not at all.  SM_ETIMEDOUT means none of this
 * frame was written: sending it again is safe, nothing is lost or doubled.
 * If the timeout strikes after the frame's first byte was written, the
 * frame is committed: the rest is copied into the connection, written
 * before anything else by the next send, sm_flush, receive or sm_close,
 * and this call returns 0 (sm_flush waits for it and reports its fate).
 *
 * Errors: SM_EINVAL (msg NULL with len > 0), SM_ETOOBIG (len > 2^32-1),
 * SM_ETIMEDOUT (not sent, see above), SM_EBROKEN (a started frame's rest
 * could not be kept for want of memory: the stream is cut, close c),
 * -errno (-EPIPE, -ECONNRESET when the peer is gone).  After SM_EBROKEN,
 * or an -errno once part of a frame was written, every later send
 * returns the same error.
 */
SM_API int sm_send(sm_conn *c, const void *msg, size_t len);

/*
 * sm_send_flags - sm_send with flags; 0 is exactly sm_send.
 *
 * SM_MORE says more messages follow at once: the frame is copied into the
 * connection's send buffer and nothing is written while the held frames
 * fit in SM_SEND_BUFFER bytes, so a stream of small messages costs one
 * system call per 64 KiB instead of one per message.  The held frames are
 * written, in order and in one writev with the new frame, by the first of:
 * a send without SM_MORE, a frame that does not fit, sm_flush, any receive
 * on the connection (the reply may depend on them), and sm_close.  A
 * receive skips this while another thread is inside a send on the same
 * connection: a thread that batches should end its batch itself, with a
 * plain send or sm_flush.
 * msg stays the caller's in every case.
 *
 * Errors: as sm_send, plus SM_EINVAL for an unknown flag and SM_ENOMEM
 * when the send buffer cannot be allocated (first SM_MORE only).  A call
 * that writes held frames reports their failure too; if none of their
 * bytes went out, they stay held.
 */
SM_API int sm_send_flags(sm_conn *c, const void *msg, size_t len, int flags);

/*
 * sm_flush - write every frame held back by SM_MORE, and the rest of a
 * frame a send timeout cut; blocks like sm_send.  Returns 0 (also when
 * nothing is held), SM_EINVAL, SM_ETIMEDOUT (what is held stays held and
 * the next call goes on with it: nothing is lost) or -errno; once the
 * stream was cut, the sticky send error.
 */
SM_API int sm_flush(sm_conn *c);

/*
 * sm_recv - receive one whole message into buf (capacity cap).
 *
 * Blocks until a message arrives or recv_timeout_ms expires.  Returns the
 * message's length (0 is a valid, empty message).  Frames held back by
 * SM_MORE are written as the socket takes them while this call reads, so
 * two peers that both hold frames never wait on each other; what is not
 * written by the time a message is here stays held.  If writing them
 * fails, that error is returned.
 *
 * Errors:
 *   SM_EMSGSIZE   the message is larger than cap.  Nothing is consumed: the
 *                 message waits for a larger buffer or sm_recv_alloc.
 *   SM_ECLOSED    the peer closed the connection between messages.
 *   SM_ETRUNCATED the stream ended inside a message.
 *   SM_ETOOBIG    the peer announced more than max_frame bytes.
 *   SM_ETIMEDOUT  nothing is lost, for any message size up to max_frame:
 *                 bytes that arrived stay in the connection and the next
 *                 receive (any of the three calls) resumes the message.
 *   SM_EBROKEN    a large message cut by a timeout could not be kept for
 *                 want of memory; the connection is dead.
 *   SM_EINVAL, -errno (-ECONNRESET: the peer reset the connection).
 * After any error other than SM_EMSGSIZE, SM_ETIMEDOUT and SM_ENOMEM, the
 * connection is failed: every later receive returns the same error.
 */
SM_API ssize_t sm_recv(sm_conn *c, void *buf, size_t cap);

/*
 * sm_recv_alloc - receive one whole message of any size up to max_frame.
 *
 * Stores a malloc()ed copy in *msg, which the caller must free() (also for
 * an empty message), and returns its length.  Blocks like sm_recv.  On
 * error *msg is NULL.  Errors: as sm_recv, without SM_EMSGSIZE, plus
 * SM_ENOMEM.
 */
SM_API ssize_t sm_recv_alloc(sm_conn *c, void **msg);

/*
 * sm_recv_view - receive one whole message without copying it out.
 *
 * Points *msg at the payload inside the connection's own buffer and returns
 * its length.  The view is read-only and stays valid until the next receive
 * call (sm_recv, sm_recv_alloc or sm_recv_view) or sm_close on c; copy
 * what must live longer.  Messages larger than SM_RECV_BUFFER go to a second buffer the
 * connection keeps while messages stay large.  Blocks like sm_recv.  On
 * error *msg is NULL.  Errors: as sm_recv_alloc.
 */
SM_API ssize_t sm_recv_view(sm_conn *c, const void **msg);

/* What a non-blocking connection waits for (sm_conn_events). */
#define SM_WANT_READ 1
#define SM_WANT_WRITE 2

/*
 * Non-blocking use, inside your own poll/epoll/libuv loop.  Set
 * sm_options.nonblocking and no call waits: where it would, it returns
 * SM_EAGAIN, and a message that is not whole yet stays inside the
 * connection, whatever its size, nothing lost or doubled.
 *
 *   connect   sm_connect_opts returns at once with a connection whose
 *             connect may be in progress (to the first address a name
 *             resolves to; the resolving itself still blocks, so use
 *             numeric addresses in a loop).  Wait for SM_WANT_WRITE; the
 *             next call reports the outcome, or ask sm_conn_connected.
 *             A Unix listener with a full backlog gives SM_EAGAIN: no
 *             connection, try again later.
 *   receive   take messages until SM_EAGAIN, then wait for the events
 *             sm_conn_events names.  A message is handed out whole.  The
 *             SM_EAGAIN that ends a drain costs no system call when the
 *             read before it emptied the socket (not over TLS); what came
 *             since, poll (level- or edge-triggered) reports.
 *   send      a message the socket cannot take now is held, up to
 *             SM_SEND_BUFFER bytes in all (or one larger message when
 *             nothing else is held), and returns 0; beyond that,
 *             SM_EAGAIN and nothing is held.  Held bytes go out with the
 *             next send, receive or sm_flush: sm_conn_events asks for
 *             SM_WANT_WRITE while any wait.
 *
 *     for (;;) {
 *         struct pollfd p = { sm_conn_fd(c), 0, 0 };
 *         int want = sm_conn_events(c);
 *         p.events = (want & SM_WANT_READ ? POLLIN : 0) | (want & SM_WANT_WRITE ? POLLOUT : 0);
 *         poll(&p, 1, -1);
 *         if (p.revents & POLLOUT) sm_flush(c);       // SM_EAGAIN: still held
 *         while ((n = sm_recv(c, buf, sizeof buf)) >= 0)
 *             handle(buf, n);
 *         if (n != SM_EAGAIN) break;                    // closed or failed
 *     }
 */

/*
 * sm_conn_events - what c needs next: SM_WANT_READ, SM_WANT_WRITE, or
 * both, for poll (POLLIN/POLLOUT) on sm_conn_fd.  Only SM_WANT_WRITE while
 * a non-blocking connect is in progress.  0 for NULL.  Never blocks.
 */
SM_API int sm_conn_events(const sm_conn *c);

/*
 * sm_conn_connected - finish a non-blocking connect: 0 once connected (and
 * for every other connection), SM_EAGAIN while still in progress, or the
 * connect's error (e.g. -ECONNREFUSED), which every later call returns
 * too.  Never blocks.
 */
SM_API int sm_conn_connected(sm_conn *c);

/*
 * sm_recv_ready - 1 if a whole message is already buffered, so the next
 * sm_recv returns without touching the socket; else 0.
 *
 * poll() on sm_conn_fd only sees bytes still in the kernel: after one read
 * the library may hold several messages, so drain with this before polling.
 */
SM_API int sm_recv_ready(const sm_conn *c);

/*
 * sm_conn_set_options - change a connection's options (NULL: defaults).
 * connect_timeout_ms and accept_timeout_ms are ignored here.  Must not
 * race with a send or receive on c.  Returns 0, SM_EINVAL or -errno.
 */
SM_API int sm_conn_set_options(sm_conn *c, const sm_options *opts);

/* sm_conn_peer - write the peer's address into buf; as sm_listener_addr. */
SM_API int sm_conn_peer(const sm_conn *c, char *buf, size_t len);

/*
 * sm_conn_peer_cert - the subject of the peer's verified TLS certificate
 * ("/CN=robot-3/O=..."), into buf; returns its length.  Errors: SM_EINVAL
 * (NULL argument, buf too small), SM_EVERIFY (not TLS, or the peer showed
 * no verified certificate: a client's is there only with mutual TLS).
 */
SM_API int sm_conn_peer_cert(const sm_conn *c, char *buf, size_t len);

/* sm_conn_fd - the connection's descriptor, for poll().  Still owned by c;
 * do not read or write it directly. */
SM_API int sm_conn_fd(const sm_conn *c);

/* sm_close - close the connection and free it (NULL is ignored).  Frames
 * held back by SM_MORE are written first, blocking like sm_send; a failure
 * there cannot be reported, so call sm_flush first to learn of it. */
SM_API void sm_close(sm_conn *c);

/*
 * sm_strerror - a message for any return code (never NULL; the string is
 * static or thread-local and valid until the next call on this thread).
 */
SM_API const char *sm_strerror(int rc);

/*
 * sm_last_error - the detail of the last failed call on this thread, such
 * as "connect to 127.0.0.1:9: Connection refused"; "" if none failed yet.
 * Valid until the next failing call on this thread.  SM_EAGAIN is not a
 * failure: it leaves this as it was.
 */
SM_API const char *sm_last_error(void);

/* sm_version - the library's version, "MAJOR.MINOR.PATCH". */
SM_API const char *sm_version(void);

/* ------------------------------------------------------------------------
 * Event-driven server: many connections, several listeners, one thread.
 *
 * sm_server_run waits for events and calls your handlers; a handler must
 * not block.  Sending from the loop never blocks either: each connection
 * has an output queue, written as the socket accepts it.  Connections are
 * named by an sm_conn_id that is never reused within the process, so an
 * old id can never reach a newer client.
 *
 * Threads: every sm_server_* call except sm_server_stop, sm_server_post and
 * sm_server_call must come from the thread running sm_server_run or
 * sm_server_run_once (the loop thread; normally from inside a handler),
 * or from any one thread while the server is not running.
 * ------------------------------------------------------------------------ */

typedef struct sm_server sm_server;
typedef uint64_t sm_conn_id; /* never 0 */

typedef struct sm_server_handlers {
    /* A client connected. */
    void (*on_open)(sm_server *s, sm_conn_id id, void *arg);
    /* One whole message arrived; msg is valid only during the call. */
    void (*on_message)(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg);
    /* The connection is gone; id is invalid once this returns.  reason:
     * SM_ECLOSED (peer closed), SM_ETRUNCATED, SM_ETOOBIG, SM_ETIMEDOUT
     * (idle, or reset by stall_timeout_ms), SM_ESTOPPED (server
     * stopping), SM_ENOMEM, -errno (e.g. -ECONNRESET), or 0 (you called
     * sm_server_disconnect).  A peer that hangs up is read to the end
     * first: every whole message it sent reaches on_message. */
    void (*on_close)(sm_server *s, sm_conn_id id, int reason, void *arg);
    /* A dialled link's connect failed (reason: -ECONNREFUSED, SM_EADDR
     * when the name does not resolve, SM_ETIMEDOUT...); the next try is
     * in delay_ms.  (on_open and on_close come in pairs: a try that fails
     * calls only this.) */
    void (*on_retry)(sm_server *s, sm_conn_id id, int reason, int delay_ms, void *arg);
} sm_server_handlers;

/* Server defaults (see sm_server_options). */
#define SM_SERVER_DEFAULT_BUDGET ((size_t)256 * 1024 * 1024)
#define SM_SERVER_DEFAULT_POSTED ((size_t)64 * 1024 * 1024)
#define SM_SERVER_DEFAULT_STALL_MS 30000
/* A size option set to this has no limit. */
#define SM_UNLIMITED SIZE_MAX

/* Server options; zero means the default, as for sm_options. */
typedef struct sm_server_options {
    uint32_t max_frame;   /* largest message accepted; 0 = 16 MiB */
    size_t high_water;    /* queued output bytes at which the server stops
                          * reading from that client until its queue has
                          * drained (backpressure); 0 = 1 MiB */
    size_t max_queue;     /* queued output beyond which sends to that client
                          * fail with SM_EFULL; 0 = high_water + 2 * max_frame
                          * (SM_UNLIMITED if that overflows) */
    int idle_timeout_ms;  /* close clients silent this long; 0 = never.  A
                          * client the server paused (backpressure, budget)
                          * is not silent: its clock restarts on resume */
    int max_conns;        /* more are accepted and closed at once; 0 = no cap */
    int nagle;            /* nonzero leaves Nagle on; default sets TCP_NODELAY */
    size_t max_buffered;  /* memory budget for the whole server: bytes held in
                          * partly received frames and output queues.  Over
                          * it, clients holding more than 64 KiB are not read
                          * (small messages still flow for the others), and
                          * one client at a time may finish its large frame.
                          * 0 = SM_SERVER_DEFAULT_BUDGET (256 MiB);
                          * SM_UNLIMITED: no budget */
    int stall_timeout_ms; /* reset a client that takes none of its queued
                           * output this long, that has not drained this
                           * long after sm_server_disconnect, or that stops
                           * sending the large frame it was let finish over
                           * the budget; its memory is freed.  0 = 30 s */
    size_t max_posted;    /* bytes (messages + 4 each) that sm_server_post may
                          * hold before the loop queues them; beyond it
                          * sm_server_post returns SM_EFULL.  0 = 64 MiB or
                          * 2 * max_frame, whichever is larger */
} sm_server_options;

/* Counters, for monitoring and tests. */
typedef struct sm_server_stats {
    size_t conns;           /* open now */
    uint64_t accepted;      /* connections accepted in all */
    uint64_t rejected;      /* accepted and closed at once: max_conns reached */
    uint64_t accept_pauses; /* times accepting paused: out of descriptors */
    size_t buffered;        /* bytes held now in partly received frames and
                             * output queues (what max_buffered bounds) */
    uint64_t stalled;       /* connections reset by stall_timeout_ms */
    uint64_t tls_failed;    /* TLS clients closed before their handshake
                             * was done (failed, or past its timeout) */
} sm_server_stats;

/*
 * sm_server_new - create a server.  handlers (copied; any member may be
 * NULL) and arg are passed to every callback; opts may be NULL.  Free it
 * with sm_server_free.  Errors: SM_EINVAL, SM_ENOMEM, -errno.
 */
SM_API int sm_server_new(sm_server **out, const sm_server_handlers *handlers,
                         const sm_server_options *opts, void *arg);

/*
 * sm_server_listen - also accept clients on addr (any form sm_listen
 * takes).  Call it once per port.  Returns the listener's index (0, 1, ...)
 * for sm_server_addr, or an error as sm_listen's.
 */
SM_API int sm_server_listen(sm_server *s, const char *addr);

/*
 * sm_server_listen_tls - sm_server_listen, with TLS on every connection
 * from addr (tls: the server's certificate and key, and for mutual TLS
 * require_client_cert with ca_file; NULL: plain).  One server may offer
 * plain and TLS ports at once.  The handshake runs in the loop, never
 * blocking it; a client that has not finished it within
 * handshake_timeout_ms (default 10 s), or fails it, is closed without
 * on_open or on_close (sm_server_stats.tls_failed counts them).  Errors:
 * as sm_server_listen's, plus SM_ENOTLS, SM_ETLS (unreadable certificate
 * or key: sm_last_error() says which) and SM_EINVAL (no cert_file or
 * key_file).
 */
SM_API int sm_server_listen_tls(sm_server *s, const char *addr, const sm_tls_options *tls);

/* sm_server_peer_cert - the subject of a TLS client's verified
 * certificate (mutual TLS), as sm_conn_peer_cert.  Errors: SM_ENOCONN,
 * SM_EINVAL, SM_EVERIFY (not TLS, or no verified certificate). */
SM_API int sm_server_peer_cert(const sm_server *s, sm_conn_id id, char *buf, size_t len);

/*
 * sm_server_listen_fd - also accept clients on fd, a listening stream
 * socket you made or inherited (TCP or Unix).  The server owns it from
 * then on and makes it non-blocking and close-on-exec; it closes it in
 * sm_server_free (a Unix socket's file is left alone: it is not ours).
 * Returns the listener's index.  Errors: SM_EINVAL (NULL s, negative fd,
 * or a socket that does not listen), SM_ENOMEM, -errno (-ENOTSOCK); on
 * failure fd stays yours.
 */
SM_API int sm_server_listen_fd(sm_server *s, int fd);

/*
 * sm_server_listen_inherited - serve the sockets systemd passed (socket
 * activation: LISTEN_PID is this process and LISTEN_FDS counts the
 * listening sockets from fd 3 on; see sd_listen_fds(3)).  Each becomes a
 * listener as with sm_server_listen_fd, and the variables are removed
 * from the environment so children do not take them.  Returns how many
 * listeners were added, 0 when the process was not socket-activated, or
 * an error as sm_server_listen_fd's.
 */
SM_API int sm_server_listen_inherited(sm_server *s);

/*
 * sm_server_adopt - serve fd, a connected stream socket (e.g. one end of a
 * socketpair, or a connection accepted or inherited elsewhere), as if a
 * listener had accepted it: on_open is called before this returns, and
 * the id goes to *id (id may be NULL).  The server owns fd from then on
 * and makes it non-blocking and close-on-exec.  Loop thread only.
 * Errors: SM_EINVAL (NULL s, negative fd, or a listening socket),
 * SM_ENOMEM, -errno (-ENOTSOCK: pipes and serial ports are for
 * sm_conn_adopt); on failure fd stays yours.
 */
SM_API int sm_server_adopt(sm_server *s, int fd, sm_conn_id *id);

/* Options for a dialled link; zero means the default. */
typedef struct sm_dial_options {
    int min_retry_ms; /* the first wait after a failed try or a drop; 0 = 100 */
    int max_retry_ms; /* each wait doubles, with jitter, up to this; 0 = 5000 */
    size_t max_queue; /* bytes queued for the link, while it is down too;
                       * 0 = the server's max_queue */
} sm_dial_options;

/*
 * sm_server_connect - dial addr from the server's loop, and dial again
 * whenever the link drops, until sm_server_disconnect.  The id (to *id;
 * id may be NULL) stays the same across reconnects, so "send to robot 3"
 * keeps working after robot 3 reboots.  The link gets the same handlers
 * as accepted clients: on_open each time it comes up, on_message, on_close
 * each time it drops (with the reason), and on_retry for each try that
 * fails.  sm_server_dialled tells a dialled link from an accepted one.
 *
 * Never blocks: the first try, like every retry, runs in the loop.  The
 * connect is non-blocking and bounded by 10 s; a numeric address needs no
 * lookup, and a name is looked up on a thread of its own (getaddrinfo
 * blocks), so the loop never waits for DNS; the first address it gives is
 * used.  Between tries the wait grows from min_retry_ms to max_retry_ms,
 * doubling, with jitter (a random wait between half and all of the
 * interval), and starts again from min_retry_ms once a link is up.
 *
 * Sends to a link that is down are queued, up to max_queue, and go out in
 * order once it is up.  What a drop can lose: messages already handed to
 * the kernel that the peer had not read (in flight), and the rest of one
 * that was partly written, which is dropped so the peer never sees half a
 * frame.  Nothing still queued is lost.
 *
 * A link ends with sm_server_disconnect, or when the server stops or is
 * freed: one that is up then gets on_close (SM_ESTOPPED); one that is down
 * ends without a call, so keep what you gave sm_server_set_data for it
 * reachable elsewhere too.  (Inside its own on_close a link cannot be
 * disconnected yet: do it from a timer or sm_server_call.)
 *
 * Errors: SM_EINVAL (NULL argument, a negative interval), SM_EADDR
 * (malformed, or port 0), SM_ENOMEM.  Loop thread only.
 */
SM_API int sm_server_connect(sm_server *s, const char *addr, const sm_dial_options *opts,
                             sm_conn_id *id);

/* sm_server_dialled - 1 if id is a link made by sm_server_connect, else 0. */
SM_API int sm_server_dialled(const sm_server *s, sm_conn_id id);

/* sm_server_addr - the bound address of listener index, as
 * sm_listener_addr.  Errors: SM_EINVAL (no such index or short buf). */
SM_API int sm_server_addr(const sm_server *s, int index, char *buf, size_t len);

/*
 * sm_server_run - serve until sm_server_stop.  Blocks.  On return every
 * connection has been closed and its on_close called (reason SM_ESTOPPED);
 * listeners stay open, so run may be called again.  Returns 0, or -errno
 * if waiting for events failed.  A stop requested before run is honoured.
 */
SM_API int sm_server_run(sm_server *s);

/*
 * Inside your own event loop (a GUI, a game, libuv, libevent): instead of
 * sm_server_run, watch sm_server_fd for readability with your loop, and
 * whenever it is readable or sm_server_timeout has passed, call
 * sm_server_run_once(s, 0).  sm_server_run is exactly that in a loop.
 *
 *     struct pollfd p = { sm_server_fd(s), POLLIN, 0 };
 *     for (;;) {
 *         poll(&p, 1, sm_server_timeout(s));   // with your other fds
 *         if (sm_server_run_once(s, 0) == SM_ESTOPPED)
 *             break;
 *     }
 */

/* sm_server_fd - a descriptor that is readable whenever the server has
 * work (its epoll instance).  Still owned by s; only poll it. */
SM_API int sm_server_fd(const sm_server *s);

/*
 * sm_server_timeout - how long the caller may wait (ms) before the server
 * needs sm_server_run_once even with sm_server_fd quiet: its next timer,
 * idle timeout, stall check or accept retry; 0 while output queued outside
 * a handler (a send from your own code) waits to be written.  -1: nothing
 * scheduled.  Loop thread only.
 */
SM_API int sm_server_timeout(const sm_server *s);

/*
 * sm_server_run_once - do every piece of work that is ready: wait up to
 * timeout_ms for events (0: do not wait; -1: until the next thing the
 * server must do), handle them, run due timers and queued calls, and
 * write what it can.  Returns how many events it handled (>= 0), or
 * SM_ESTOPPED once sm_server_stop was called: then, as at the end of
 * sm_server_run, every connection has been closed (on_close with
 * SM_ESTOPPED) and the server may be run again.  Other errors: SM_EINVAL,
 * -errno if waiting for events failed.
 */
SM_API int sm_server_run_once(sm_server *s, int timeout_ms);

/* A timer's callback; id is the timer's. */
typedef void sm_timer_fn(sm_server *s, uint64_t id, void *arg);

/*
 * sm_server_timer - call fn(s, id, arg) on the loop thread after delay_ms,
 * then every repeat_ms if repeat_ms > 0 (0: once), until cancelled.  The
 * id (never 0) goes to *id (id may be NULL).  Loop thread only.  Errors:
 * SM_EINVAL (NULL s or fn, a negative time), SM_ENOMEM.
 */
SM_API int sm_server_timer(sm_server *s, int delay_ms, int repeat_ms, sm_timer_fn *fn, void *arg,
                           uint64_t *id);

/* sm_server_cancel_timer - the timer will not fire again (also from its
 * own callback).  Returns 0, SM_EINVAL (NULL s) or SM_ENOCONN (no such
 * timer: it ran once and is done, or was cancelled).  Loop thread only. */
SM_API int sm_server_cancel_timer(sm_server *s, uint64_t id);

/* A function to run on the loop thread (sm_server_call). */
typedef void sm_call_fn(sm_server *s, void *arg);

/*
 * sm_server_call - run fn(s, arg) on the loop thread, soon, from any
 * thread: there fn may use every sm_server_* call (broadcast, look up ids,
 * disconnect).  Calls run in the order they were made.  Never blocks.
 * Each call counts 64 bytes against max_posted.  Calls still queued when
 * the server is freed are not run.  Errors: SM_EINVAL (NULL s or fn),
 * SM_EFULL (max_posted reached), SM_ENOMEM.
 */
SM_API int sm_server_call(sm_server *s, sm_call_fn *fn, void *arg);

/*
 * sm_server_pause, sm_server_resume - stop and restart reading from one
 * client, so an application that hands requests to workers can push back
 * on a client that floods it (its messages wait in the kernel, and then
 * in its TCP window).  Output still flows.  A paused client is not closed
 * as idle; its idle clock restarts on resume.  Returns 0 or SM_ENOCONN.
 * Loop thread only.
 */
SM_API int sm_server_pause(sm_server *s, sm_conn_id id);
SM_API int sm_server_resume(sm_server *s, sm_conn_id id);

/* sm_server_stop - make sm_server_run return soon (and
 * sm_server_run_once return SM_ESTOPPED).  Safe from any thread and from
 * a signal handler (async-signal-safe). */
SM_API void sm_server_stop(sm_server *s);

/*
 * sm_server_send - queue one message to a client; never blocks.  msg is
 * copied.  Returns 0, SM_ENOCONN (no such open connection), SM_EFULL (its
 * queue would pass max_queue: nothing queued), SM_ETOOBIG, SM_EINVAL or
 * SM_ENOMEM.  Loop thread only.
 */
SM_API int sm_server_send(sm_server *s, sm_conn_id id, const void *msg, size_t len);

/* sm_server_broadcast - sm_server_send to every open connection except
 * `except` (0: none).  Returns how many queued it, or SM_EINVAL. */
SM_API int sm_server_broadcast(sm_server *s, const void *msg, size_t len, sm_conn_id except);

/*
 * sm_server_post - sm_server_send from any other thread: msg is copied and
 * the loop is woken to queue it.  Never blocks.  Posts to one id arrive
 * in order and none is dropped while the connection lives: the loop moves
 * them into the client's output queue while it is below high_water, and
 * holds the rest meanwhile.  What all threads have posted and the loop has
 * not yet queued is bounded by max_posted: beyond it this returns SM_EFULL
 * and the caller should retry later (back-pressure, like ZeroMQ's
 * high-water mark).  Posts for a connection that closes before the loop
 * queues them are dropped; its on_close says so.
 *
 * Errors: SM_EINVAL (NULL s, msg NULL with len > 0, or id 0, which is
 * never a connection), SM_ENOCONN (an id this process never gave out),
 * SM_ETOOBIG, SM_EFULL (max_posted reached, or the message can never fit
 * max_queue), SM_ENOMEM.
 */
SM_API int sm_server_post(sm_server *s, sm_conn_id id, const void *msg, size_t len);

/* sm_server_disconnect - stop reading from a client, send what is queued,
 * then close it (on_close gets reason 0).  A dialled link is not dialled
 * again; if it is down at the time, it is freed at once, with no
 * on_close (it had none to report).  A client that has not taken
 * its queue within stall_timeout_ms is reset instead (reason
 * SM_ETIMEDOUT), so its memory is never held for long.  Returns 0 or
 * SM_ENOCONN. */
SM_API int sm_server_disconnect(sm_server *s, sm_conn_id id);

/* sm_server_set_data / sm_server_data - one pointer of yours per
 * connection (NULL at first).  set returns 0 or SM_ENOCONN; data returns
 * NULL for an unknown id. */
SM_API int sm_server_set_data(sm_server *s, sm_conn_id id, void *data);
SM_API void *sm_server_data(const sm_server *s, sm_conn_id id);

/* sm_server_peer - the client's address, as sm_conn_peer.  Errors:
 * SM_ENOCONN, SM_EINVAL, -errno. */
SM_API int sm_server_peer(const sm_server *s, sm_conn_id id, char *buf, size_t len);

/* sm_server_ids - store up to cap ids of open connections (those that
 * sm_server_send accepts), least recently active first; returns how many
 * there are (may exceed cap: call with cap 0 to count). */
SM_API size_t sm_server_ids(const sm_server *s, sm_conn_id *ids, size_t cap);

/* sm_server_get_stats - fill *st with the server's counters. */
SM_API void sm_server_get_stats(const sm_server *s, sm_server_stats *st);

/* sm_server_free - close all connections (calling on_close with
 * SM_ESTOPPED) and listeners and free the server (NULL is ignored).  Must
 * not be called while sm_server_run is running. */
SM_API void sm_server_free(sm_server *s);

#ifdef __cplusplus
}
#endif

#endif
