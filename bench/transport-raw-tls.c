/* raw-tls: OpenSSL by hand, the way a first program does it, as the
 * baseline of sockmsg-tls.  Blocking TCP sockets with TCP_NODELAY; each
 * message is an SSL_write of its 4-byte length, then one of the payload;
 * receiving, SSL_reads of exactly 4 bytes, then of the payload (tlssock.c).
 * OpenSSL's defaults throughout: TLS 1.3, its default suites and groups,
 * no modes set (so SSL_MODE_RELEASE_BUFFERS off).  The server workload is
 * a one-thread epoll echo server with OpenSSL non-blocking on each socket;
 * the hs workload's client keeps one context and makes a new session (a
 * full handshake) per connection. */
#include "bench.h"
#include "rawsock.h"
#include "tlssock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

const char t_name[] = "raw-tls";

struct bench_listener {
    int fd;
};

struct bench_conn {
    tls_conn *c;
};

int t_listen(bench_listener **l, int *port)
{
    tls_server_ctx(); /* the certificate is loaded before the client comes */
    *l = malloc(sizeof **l);
    return *l && ((*l)->fd = raw_listen(port)) >= 0 ? 0 : -1;
}

int t_accept(bench_listener *l, bench_conn **c)
{
    if (!(*c = calloc(1, sizeof **c)))
        return -1;
    return tls_conn_accept(&(*c)->c, l->fd);
}

void t_listener_close(bench_listener *l)
{
    close(l->fd);
    free(l);
}

int t_connect(int port, bench_conn **c)
{
    if (!(*c = calloc(1, sizeof **c)))
        return -1;
    return tls_conn_connect(&(*c)->c, port);
}

/* Nothing is held back: "more" changes nothing. */
int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    (void)more;
    return tls_conn_send(c->c, msg, len);
}

ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    return tls_conn_recv(c->c, msg);
}

void t_close(bench_conn *c)
{
    tls_note(tls_conn_ssl(c->c));
    tls_conn_close(c->c);
    free(c);
}

/* ---- the epoll echo server ---- */

/* One SSL_read takes at most one record: 16 KiB of plaintext. */
#define SCRATCH_LEN (16u * 1024u)

/* A connection: its session, a partial frame and output that the socket
 * has not taken (while there is any, the peer is not read: the SSL_write
 * is retried with the same buffer, as OpenSSL asks). */
struct peer {
    int fd;
    SSL *ssl;
    int handshaking;
    uint32_t events;
    uint8_t *partial;
    size_t partial_len;
    uint8_t *pending;
    size_t pending_len;
};

static volatile sig_atomic_t stopping;
static uint8_t scratch[SCRATCH_LEN];

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

static size_t get_header(const uint8_t *h)
{
    return (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
}

static void peer_close(int ep, struct peer *p)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
    SSL_free(p->ssl);
    ERR_clear_error();
    close(p->fd);
    free(p->partial);
    free(p->pending);
    free(p);
}

static int peer_watch(int ep, struct peer *p, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = p };
    if (events == p->events)
        return 0;
    p->events = events;
    return epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
}

/* What a failed SSL call waits for, as epoll events; 0: it failed. */
static uint32_t wants(SSL *ssl, int ret)
{
    int err = SSL_get_error(ssl, ret);
    return err == SSL_ERROR_WANT_READ ? EPOLLIN : err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0;
}

/* Writes the pending output; -1 on error. */
static int peer_flush(int ep, struct peer *p)
{
    size_t n = 0;
    int ret = SSL_write_ex(p->ssl, p->pending, p->pending_len, &n);
    if (ret != 1) {
        uint32_t want = wants(p->ssl, ret);
        return want ? peer_watch(ep, p, want) : -1;
    }
    free(p->pending);
    p->pending = NULL;
    p->pending_len = 0;
    return peer_watch(ep, p, EPOLLIN);
}

/* Echoes every whole frame in data (the replies to one read in one
 * SSL_write); keeps a trailing partial frame. */
static int peer_input(int ep, struct peer *p, const uint8_t *data, size_t len)
{
    size_t pos = 0;
    while (len - pos >= 4 && len - pos >= 4 + get_header(data + pos))
        pos += 4 + get_header(data + pos);
    if (pos > 0) {
        if (!(p->pending = malloc(pos)))
            return -1;
        memcpy(p->pending, data, pos);
        p->pending_len = pos;
        if (peer_flush(ep, p) < 0)
            return -1;
    }
    if (pos < len) {
        uint8_t *q = malloc(len - pos);
        if (!q)
            return -1;
        memcpy(q, data + pos, len - pos);
        p->partial = q;
        p->partial_len = len - pos;
    }
    return 0;
}

/* One SSL_read (a record), and more while OpenSSL holds plaintext. */
static int peer_read(int ep, struct peer *p)
{
    do {
        size_t n = 0;
        int ret = SSL_read_ex(p->ssl, scratch, sizeof scratch, &n);
        if (ret != 1) {
            uint32_t want = wants(p->ssl, ret);
            return want ? peer_watch(ep, p, want) : -1;
        }
        if (!p->partial) {
            if (peer_input(ep, p, scratch, n) < 0)
                return -1;
            continue;
        }
        uint8_t *joined = realloc(p->partial, p->partial_len + n);
        if (!joined)
            return -1;
        memcpy(joined + p->partial_len, scratch, n);
        size_t len = p->partial_len + n;
        p->partial = NULL;
        p->partial_len = 0;
        int rc = peer_input(ep, p, joined, len);
        free(joined);
        if (rc < 0)
            return -1;
    } while (!p->pending && SSL_pending(p->ssl) > 0);
    return 0;
}

static int peer_handshake(int ep, struct peer *p)
{
    int ret = SSL_do_handshake(p->ssl);
    if (ret == 1) {
        p->handshaking = 0;
        return peer_watch(ep, p, EPOLLIN);
    }
    uint32_t want = wants(p->ssl, ret);
    return want ? peer_watch(ep, p, want) : -1;
}

static void accept_peers(int ep, int listen_fd)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct peer *p = calloc(1, sizeof *p);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };
        int on = 1;
        /* TCP_NODELAY, as on the blocking sockets: the session tickets
         * that follow a handshake would otherwise hold back the echo. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        if (!p || !(p->ssl = SSL_new(tls_server_ctx())) || SSL_set_fd(p->ssl, fd) != 1 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            if (p)
                SSL_free(p->ssl);
            free(p);
            close(fd);
            ERR_clear_error();
            continue;
        }
        p->fd = fd;
        p->events = EPOLLIN;
        p->handshaking = 1;
        SSL_set_accept_state(p->ssl);
    }
}

int t_echo_server(void)
{
    int port, listen_fd = raw_listen(&port), ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, events[256];
    tls_server_ctx();
    if (listen_fd < 0 || ep < 0 || fcntl(listen_fd, F_SETFL, O_NONBLOCK) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev) < 0)
        return -1;
    signal(SIGTERM, on_term);
    bench_ready(port);
    while (!stopping) {
        int n = epoll_wait(ep, events, 256, 1000);
        for (int i = 0; i < n; i++) {
            struct peer *p = events[i].data.ptr;
            if (!p) {
                accept_peers(ep, listen_fd);
                continue;
            }
            int rc;
            if (p->handshaking)
                rc = peer_handshake(ep, p);
            else if (p->pending)
                rc = peer_flush(ep, p);
            else
                rc = peer_read(ep, p);
            if (rc < 0)
                peer_close(ep, p);
        }
    }
    /* Peers are not tracked in a list: the process is ending anyway. */
    close(ep);
    close(listen_fd);
    return 0;
}

int t_echo_clients(int port, pid_t server, int conns, int rounds, struct bench_echo_result *r)
{
    return tls_echo_clients(port, server, conns, rounds, r);
}

/* The conn workload's clients speak plain framing. */
int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r)
{
    (void)port, (void)conns, (void)echoes, (void)raw, (void)r;
    return BENCH_UNSUPPORTED;
}

/* Its own client is the hand-written one, raw or not. */
int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r)
{
    (void)raw;
    return bench_hs_clients(port, count, echoes, r);
}

/* Links its server dials, and their reconnects, are sockmsg's alone. */
int t_links(int conns, int rounds, int dialled, struct bench_links_result *r)
{
    (void)conns, (void)rounds, (void)dialled, (void)r;
    return BENCH_UNSUPPORTED;
}

int t_reconnect(int pause_ms, int times, struct bench_reconnect_result *r)
{
    (void)pause_ms, (void)times, (void)r;
    return BENCH_UNSUPPORTED;
}
