/* sockmsg-nb: the library's non-blocking API, one connection driven by
 * poll() as an application's own loop drives it (the loop in sockmsg.h,
 * "Non-blocking use"), for the lat and thr workloads.  Both ends have
 * sm_options.nonblocking: the client from sm_connect_opts, the server's
 * connection from sm_listen_opts (an accepted connection has its
 * listener's options).  A receive takes messages with sm_recv until
 * SM_EAGAIN, then waits in poll() on sm_conn_fd for the events
 * sm_conn_events names, writing what is held (sm_flush) when the socket is
 * writable; a send the library cannot hold (SM_EAGAIN) waits for
 * writability, flushes and sends again.  The "more" variant is SM_MORE and
 * sm_recv_view, as in transport-sockmsg.c.  No other workload: the server,
 * conn and hs workloads find no echo server, links and reconnect are
 * sockmsg's. */
#include "bench.h"

#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char t_name[] = "sockmsg-nb";

#define WAIT_LIMIT_S 60 /* no wait for the peer may take longer */

static const sm_options nonblocking = { .nonblocking = 1 };

struct bench_listener {
    sm_listener *l;
};

struct bench_conn {
    sm_conn *c;
    void *buf; /* sm_recv copies the message here */
    size_t cap;
};

static int failed(const char *what, int rc)
{
    fprintf(stderr, "bench-sockmsg-nb: %s: %s (%s)\n", what, sm_strerror(rc), sm_last_error());
    return -1;
}

/* poll() on one descriptor, a second at a time, at most WAIT_LIMIT_S in
 * all; p->revents says what came.  0, or -1 on failure or time-out. */
static int wait_on(struct pollfd *p)
{
    double until = bench_now() + WAIT_LIMIT_S;
    for (;;) {
        int n = poll(p, 1, 1000);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            perror("bench-sockmsg-nb: poll");
            return -1;
        }
        if (bench_now() > until) {
            fprintf(stderr, "bench-sockmsg-nb: nothing from the peer in %d s\n", WAIT_LIMIT_S);
            return -1;
        }
    }
}

/* Waits until the socket can take more, then writes what is held. */
static int wait_writable(bench_conn *c)
{
    struct pollfd p = { .fd = sm_conn_fd(c->c), .events = POLLOUT };
    if (wait_on(&p) < 0)
        return -1;
    int rc = sm_flush(c->c);
    return rc < 0 && rc != SM_EAGAIN ? failed("flush", rc) : 0;
}

/* One turn of the loop: waits for what the connection wants, and writes
 * what is held once the socket is writable. */
static int wait_events(bench_conn *c)
{
    int want = sm_conn_events(c->c);
    struct pollfd p = { .fd = sm_conn_fd(c->c),
                        .events = (short)((want & SM_WANT_READ ? POLLIN : 0) |
                                          (want & SM_WANT_WRITE ? POLLOUT : 0)) };
    if (wait_on(&p) < 0)
        return -1;
    if (p.revents & POLLOUT) {
        int rc = sm_flush(c->c);
        if (rc < 0 && rc != SM_EAGAIN)
            return failed("flush", rc);
    }
    return 0;
}

static int local_port(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    return colon ? atoi(colon + 1) : 0;
}

int t_listen(bench_listener **l, int *port)
{
    char addr[SM_ADDRSTRLEN];
    int rc;
    if (!(*l = malloc(sizeof **l)))
        return -1;
    if ((rc = sm_listen_opts(&(*l)->l, "127.0.0.1:0", &nonblocking)) < 0 ||
        (rc = sm_listener_addr((*l)->l, addr, sizeof addr)) < 0)
        return failed("listen", rc);
    *port = local_port(addr);
    return 0;
}

static int conn_new(sm_conn *sc, bench_conn **c)
{
    if (!(*c = calloc(1, sizeof **c))) {
        sm_close(sc);
        return -1;
    }
    (*c)->c = sc;
    return 0;
}

int t_accept(bench_listener *l, bench_conn **c)
{
    sm_conn *sc;
    for (;;) {
        int rc = sm_accept(l->l, &sc);
        if (rc == 0)
            return conn_new(sc, c);
        if (rc != SM_EAGAIN)
            return failed("accept", rc);
        struct pollfd p = { .fd = sm_listener_fd(l->l), .events = POLLIN };
        if (wait_on(&p) < 0)
            return -1;
    }
}

void t_listener_close(bench_listener *l)
{
    sm_listener_close(l->l);
    free(l);
}

/* The connect is started, then finished once the socket is writable. */
int t_connect(int port, bench_conn **c)
{
    char addr[64];
    sm_conn *sc;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    int rc = sm_connect_opts(&sc, addr, &nonblocking);
    if (rc < 0)
        return failed("connect", rc);
    if (conn_new(sc, c) < 0)
        return -1;
    while ((rc = sm_conn_connected(sc)) == SM_EAGAIN) {
        struct pollfd p = { .fd = sm_conn_fd(sc), .events = POLLOUT };
        if (wait_on(&p) < 0)
            return -1;
    }
    return rc < 0 ? failed("connect", rc) : 0;
}

/* more == 0 promises that everything sent so far is on the wire: what the
 * socket could not take yet is written before returning. */
int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    int rc;
    while ((rc = sm_send_flags(c->c, msg, len, more ? SM_MORE : 0)) == SM_EAGAIN)
        if (wait_writable(c) < 0)
            return -1;
    if (rc < 0)
        return failed("send", rc);
    while (!more && (sm_conn_events(c->c) & SM_WANT_WRITE))
        if (wait_writable(c) < 0)
            return -1;
    return 0;
}

/* The next message: one receive call, and a turn of the loop for each
 * SM_EAGAIN. */
ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    for (;;) {
        ssize_t len;
        if (bench_more) {
            const void *view;
            len = sm_recv_view(c->c, &view);
            *msg = view;
        } else {
            len = sm_recv(c->c, c->buf, c->cap);
            *msg = c->buf;
        }
        if (len >= 0)
            return len;
        if (len == SM_EMSGSIZE) {
            free(c->buf);
            c->cap = c->cap ? c->cap * 2 : 4096;
            if (!(c->buf = malloc(c->cap)))
                return -1;
            continue;
        }
        if (len != SM_EAGAIN)
            return failed("receive", (int)len);
        if (wait_events(c) < 0)
            return -1;
    }
}

void t_close(bench_conn *c)
{
    sm_close(c->c);
    free(c->buf);
    free(c);
}

/* ---- the other workloads: not this transport's ---- */

int t_echo_server(void)
{
    bench_ready(0);
    return 0;
}

int t_echo_clients(int port, pid_t server, int conns, int rounds, struct bench_echo_result *r)
{
    (void)port, (void)server, (void)conns, (void)rounds, (void)r;
    return BENCH_UNSUPPORTED;
}

int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r)
{
    (void)port, (void)conns, (void)echoes, (void)raw, (void)r;
    return BENCH_UNSUPPORTED;
}

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

int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r)
{
    (void)port, (void)count, (void)echoes, (void)raw, (void)r;
    return BENCH_UNSUPPORTED;
}
