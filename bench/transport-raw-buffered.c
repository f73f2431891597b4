/* raw-buffered: the strongest hand-written loop we know, as strong as the
 * one an outside harness measured libsockmsg against.  Blocking sockets
 * with TCP_NODELAY.  Sends are coalesced in a 64 KiB buffer: a frame that
 * does not fit goes out in one writev with what is buffered, and a send
 * without "more" writes at once.  Receives fill a 256 KiB buffer with reads
 * of up to 128 KiB and parse frames in place; whenever less than 128 KiB of
 * room is left, the unread bytes (less than one frame) move to the front,
 * so every read may take 128 KiB.  A frame larger than the buffer gets a
 * buffer of its own size, kept for the frames after it, and each read there
 * asks for all the frame still needs.  The server workload is an epoll
 * echo server, reading 128 KiB at a time.
 *
 * transport-raw-buffered-64k.c builds this file with the receive sizes of
 * the earlier baseline (RAWBUF_* below). */
#include "bench.h"
#include "rawsock.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef RAWBUF_NAME
#define RAWBUF_NAME "raw-buffered"
#define RAWBUF_IN (256u * 1024u)   /* the receive buffer */
#define RAWBUF_READ (128u * 1024u) /* the largest read; 0: all the free room */
#endif

#define OUT_LEN (64u * 1024u)
#define IN_LEN RAWBUF_IN
#define READ_MAX RAWBUF_READ

const char t_name[] = RAWBUF_NAME;

struct bench_listener {
    int fd;
};

struct bench_conn {
    int fd;
    size_t out_len;
    uint8_t *in;
    size_t in_cap, in_pos, in_end; /* unread bytes are in[in_pos, in_end) */
    uint8_t out[OUT_LEN];
};

static void put_header(uint8_t *h, size_t len)
{
    h[0] = (uint8_t)(len >> 24);
    h[1] = (uint8_t)(len >> 16);
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
}

static size_t get_header(const uint8_t *h)
{
    return (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
}

int t_listen(bench_listener **l, int *port)
{
    *l = malloc(sizeof **l);
    return *l && ((*l)->fd = raw_listen(port)) >= 0 ? 0 : -1;
}

static int conn_new(int fd, bench_conn **c)
{
    if (fd < 0 || !(*c = calloc(1, sizeof **c)) || !((*c)->in = malloc(IN_LEN)))
        return -1;
    (*c)->fd = fd;
    (*c)->in_cap = IN_LEN;
    return 0;
}

int t_accept(bench_listener *l, bench_conn **c)
{
    return conn_new(raw_accept(l->fd), c);
}

void t_listener_close(bench_listener *l)
{
    close(l->fd);
    free(l);
}

int t_connect(int port, bench_conn **c)
{
    return conn_new(raw_connect(port), c);
}

/* Writes the buffered frames, then msg (if any) after its header. */
static int write_out(bench_conn *c, const uint8_t *header, const void *msg, size_t len)
{
    struct iovec iov[3] = { { c->out, c->out_len }, { (void *)header, 4 }, { (void *)msg, len } };
    int count = header ? 3 : 1;
    c->out_len = 0;
    return raw_writev_all(c->fd, iov, count);
}

int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    uint8_t h[4];
    put_header(h, len);
    if (c->out_len + 4 + len > OUT_LEN)
        return write_out(c, h, msg, len);
    memcpy(c->out + c->out_len, h, 4);
    memcpy(c->out + c->out_len + 4, msg, len);
    c->out_len += 4 + len;
    return more ? 0 : write_out(c, NULL, NULL, 0);
}

/* Makes room for `need` unread bytes at in[in_pos]; with READ_MAX, moves
 * them to the front also when less than a full read's room is left. */
static int make_room(bench_conn *c, size_t need)
{
    size_t have = c->in_end - c->in_pos;
    if (need > c->in_cap) {
        uint8_t *p = malloc(need);
        if (!p)
            return -1;
        memcpy(p, c->in + c->in_pos, have);
        free(c->in);
        c->in = p;
        c->in_cap = need;
    } else if (c->in_pos + need > c->in_cap ||
               (c->in_pos > 0 && c->in_end + READ_MAX > c->in_cap)) {
        memmove(c->in, c->in + c->in_pos, have);
    } else {
        return 0;
    }
    c->in_pos = 0;
    c->in_end = have;
    return 0;
}

static int fill(bench_conn *c, size_t need)
{
    if (c->in_end - c->in_pos >= need)
        return 0;
    if (c->in_pos == c->in_end)
        c->in_pos = c->in_end = 0;
    if (make_room(c, need) < 0)
        return -1;
    /* In a buffer grown for a large frame, each read asks for all the frame
     * still needs (reads capped at 128 KiB made the 1 MiB row slower). */
    size_t max = c->in_cap > IN_LEN ? 0 : READ_MAX;
    while (c->in_end - c->in_pos < need) {
        size_t room = c->in_cap - c->in_end;
        ssize_t n = read(c->fd, c->in + c->in_end, max > 0 && room > max ? max : room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c->in_end += (size_t)n;
    }
    return 0;
}

ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    if (c->out_len && write_out(c, NULL, NULL, 0) < 0)
        return -1;
    if (fill(c, 4) < 0)
        return -1;
    size_t len = get_header(c->in + c->in_pos);
    if (fill(c, 4 + len) < 0)
        return -1;
    *msg = c->in + c->in_pos + 4;
    c->in_pos += 4 + len;
    return (ssize_t)len;
}

void t_close(bench_conn *c)
{
    if (c->out_len)
        write_out(c, NULL, NULL, 0);
    close(c->fd);
    free(c->in);
    free(c);
}

/* ---- the epoll echo server ---- */

/* The server reads as the client does (a read of 0 bytes would mean EOF). */
#define SCRATCH_LEN (READ_MAX > 0 ? READ_MAX : IN_LEN)

/* What a connection keeps between reads: a partial frame and unsent
 * output, both NULL while it is idle. */
struct peer {
    int fd;
    uint8_t *partial;
    size_t partial_len;
    uint8_t *pending;
    size_t pending_len;
};

static volatile sig_atomic_t stopping;
static uint8_t scratch[SCRATCH_LEN];
static uint8_t echo[SCRATCH_LEN + 8];

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

static void peer_close(int ep, struct peer *p)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    free(p->partial);
    free(p->pending);
    free(p);
}

/* Sends data, keeping what the socket does not take; -1 on error. */
static int peer_write(int ep, struct peer *p, const uint8_t *data, size_t len)
{
    if (p->pending_len == 0) {
        ssize_t n = send(p->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN)
            return -1;
        n = n < 0 ? 0 : n;
        data += n;
        len -= (size_t)n;
        if (len == 0)
            return 0;
    }
    uint8_t *q = realloc(p->pending, p->pending_len + len);
    if (!q)
        return -1;
    memcpy(q + p->pending_len, data, len);
    p->pending = q;
    p->pending_len += len;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = p };
    return epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
}

static int peer_flush(int ep, struct peer *p)
{
    uint8_t *data = p->pending;
    size_t len = p->pending_len;
    p->pending = NULL;
    p->pending_len = 0;
    int rc = peer_write(ep, p, data, len);
    free(data);
    if (rc == 0 && p->pending_len == 0) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };
        return epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
    }
    return rc;
}

/* Echoes every whole frame in data; keeps a trailing partial frame. */
static int peer_input(int ep, struct peer *p, const uint8_t *data, size_t len)
{
    size_t pos = 0, out = 0;
    while (len - pos >= 4 && len - pos >= 4 + get_header(data + pos)) {
        size_t frame = 4 + get_header(data + pos);
        if (out + frame > sizeof echo) {
            if (peer_write(ep, p, echo, out) < 0)
                return -1;
            out = 0;
        }
        if (frame > sizeof echo) {
            if (peer_write(ep, p, data + pos, frame) < 0)
                return -1;
        } else {
            memcpy(echo + out, data + pos, frame);
            out += frame;
        }
        pos += frame;
    }
    if (out && peer_write(ep, p, echo, out) < 0)
        return -1;
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

static int peer_read(int ep, struct peer *p)
{
    ssize_t n = recv(p->fd, scratch, sizeof scratch, MSG_DONTWAIT);
    if (n <= 0)
        return n < 0 && errno == EAGAIN ? 0 : -1;
    if (!p->partial)
        return peer_input(ep, p, scratch, (size_t)n);
    uint8_t *joined = realloc(p->partial, p->partial_len + (size_t)n);
    if (!joined)
        return -1;
    memcpy(joined + p->partial_len, scratch, (size_t)n);
    size_t len = p->partial_len + (size_t)n;
    p->partial = NULL;
    p->partial_len = 0;
    int rc = peer_input(ep, p, joined, len);
    free(joined);
    return rc;
}

static void accept_peers(int ep, int listen_fd)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct peer *p = calloc(1, sizeof *p);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };
        if (!p || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            free(p);
            close(fd);
            continue;
        }
        p->fd = fd;
    }
}

int t_echo_server(void)
{
    int port, listen_fd = raw_listen(&port), ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, events[256];
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
            int rc = 0;
            if (events[i].events & EPOLLOUT)
                rc = peer_flush(ep, p);
            if (rc == 0 && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
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
    return bench_framed_clients(port, server, conns, rounds, r);
}

/* Its own client is the hand-written one, raw or not. */
int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r)
{
    (void)raw;
    return bench_raw_conn_clients(port, conns, echoes, r);
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

/* Its own client is the hand-written one, raw or not. */
int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r)
{
    (void)raw;
    return bench_hs_clients(port, count, echoes, r);
}
