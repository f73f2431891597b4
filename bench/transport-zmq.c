/* zmq: ZeroMQ as a baseline.  PAIR sockets for lat and thr (one peer, so
 * "accept" is the bound socket itself); ROUTER and DEALERs for the server
 * workload.  Settings are libzmq's defaults unless a comment says why. */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

const char t_name[] = "zmq";

#define ENDPOINT "tcp://127.0.0.1"
#define ECHO_SIZE 64
#define RUN_LIMIT_S 300

struct bench_listener {
    void *ctx;
    void *sock;
};

struct bench_conn {
    void *ctx;
    void *sock;
    int owner;     /* closes sock and ctx; not so for the accepted side */
    zmq_msg_t msg; /* the last message received */
};

static void zmq_fail(const char *what)
{
    fprintf(stderr, "bench-zmq: %s: %s\n", what, zmq_strerror(zmq_errno()));
}

/* Binds sock on a port the kernel picks; returns the port or -1. */
static int bind_any(void *sock)
{
    char ep[256];
    size_t len = sizeof ep;
    if (zmq_bind(sock, ENDPOINT ":*") < 0 ||
        zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &len) < 0) {
        zmq_fail("bind");
        return -1;
    }
    const char *colon = strrchr(ep, ':');
    return colon ? atoi(colon + 1) : -1;
}

int t_listen(bench_listener **l, int *port)
{
    if (!(*l = calloc(1, sizeof **l)) || !((*l)->ctx = zmq_ctx_new()) ||
        !((*l)->sock = zmq_socket((*l)->ctx, ZMQ_PAIR)))
        return -1;
    return (*port = bind_any((*l)->sock)) > 0 ? 0 : -1;
}

static int conn_new(void *ctx, void *sock, int owner, bench_conn **c)
{
    if (!(*c = calloc(1, sizeof **c)))
        return -1;
    (*c)->ctx = ctx;
    (*c)->sock = sock;
    (*c)->owner = owner;
    zmq_msg_init(&(*c)->msg);
    return 0;
}

int t_accept(bench_listener *l, bench_conn **c)
{
    return conn_new(l->ctx, l->sock, 0, c);
}

/* The default linger (forever) lets zmq_ctx_term wait until whatever is
 * queued, such as the thr ack, has gone out. */
void t_listener_close(bench_listener *l)
{
    zmq_close(l->sock);
    zmq_ctx_term(l->ctx);
    free(l);
}

int t_connect(int port, bench_conn **c)
{
    char ep[64];
    void *ctx = zmq_ctx_new(), *sock = ctx ? zmq_socket(ctx, ZMQ_PAIR) : NULL;
    snprintf(ep, sizeof ep, ENDPOINT ":%d", port);
    if (!sock || zmq_connect(sock, ep) < 0) {
        zmq_fail("connect");
        return -1;
    }
    return conn_new(ctx, sock, 1, c);
}

/* `more` is not passed on: ZMQ_SNDMORE would make one multipart message. */
int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    (void)more;
    return zmq_send(c->sock, msg, len, 0) == (int)len ? 0 : -1;
}

/* zmq_msg_recv releases the previous content of c->msg first. */
ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    int n = zmq_msg_recv(&c->msg, c->sock, 0);
    if (n < 0)
        return -1;
    *msg = zmq_msg_data(&c->msg);
    return n;
}

void t_close(bench_conn *c)
{
    zmq_msg_close(&c->msg);
    if (c->owner) {
        zmq_close(c->sock);
        zmq_ctx_term(c->ctx);
    }
    free(c);
}

/* ---- the server workload ---- */

/* Sends every frame back as it came: the identity frame routes it to the
 * client it came from.  Runs until SIGTERM's default action ends it. */
int t_echo_server(void)
{
    void *ctx = zmq_ctx_new(), *sock = ctx ? zmq_socket(ctx, ZMQ_ROUTER) : NULL;
    int port = sock ? bind_any(sock) : -1;
    zmq_msg_t frame;
    if (port < 0)
        return -1;
    bench_ready(port);
    zmq_msg_init(&frame);
    for (;;) {
        if (zmq_msg_recv(&frame, sock, 0) < 0 ||
            zmq_msg_send(&frame, sock, zmq_msg_more(&frame) ? ZMQ_SNDMORE : 0) < 0) {
            zmq_fail("echo server");
            return -1;
        }
    }
}

struct clients {
    void *ctx;
    zmq_pollitem_t *items; /* items[i].socket is client i */
    int *trips;            /* round trips client i has completed */
    int open;              /* sockets created */
};

static uint64_t echo_seq(int index, int trip)
{
    return (uint64_t)index << 32 | (uint32_t)trip;
}

static int echo_request(struct clients *cl, int i)
{
    uint8_t msg[ECHO_SIZE];
    bench_fill(msg, ECHO_SIZE, echo_seq(i, cl->trips[i]));
    return zmq_send(cl->items[i].socket, msg, ECHO_SIZE, 0) == ECHO_SIZE ? 0 : -1;
}

static int echo_reply(struct clients *cl, int i)
{
    uint8_t msg[ECHO_SIZE + 1];
    int n = zmq_recv(cl->items[i].socket, msg, sizeof msg, ZMQ_DONTWAIT);
    if (n < 0 && zmq_errno() == EAGAIN)
        return 0;
    if (bench_check(msg, n, ECHO_SIZE, echo_seq(i, cl->trips[i]), 1) < 0) {
        fprintf(stderr, "bench-zmq: client %d: wrong echo (length %d)\n", i, n);
        return -1;
    }
    cl->trips[i]++;
    return 1;
}

/* Every client keeps one request in flight until each has done `rounds`
 * more round trips; -1 on a wrong echo, an error or after deadline. */
static int echo_rounds(struct clients *cl, int conns, int rounds, double deadline)
{
    int target = cl->trips[0] + rounds, busy = conns;
    for (int i = 0; i < conns; i++)
        if (echo_request(cl, i) < 0)
            return -1;
    while (busy > 0) {
        if (bench_now() > deadline || zmq_poll(cl->items, conns, 1000) < 0)
            return -1;
        for (int i = 0; i < conns; i++) {
            if (!(cl->items[i].revents & ZMQ_POLLIN))
                continue;
            int rc = echo_reply(cl, i);
            if (rc < 0)
                return -1;
            if (rc == 1 && cl->trips[i] < target && echo_request(cl, i) < 0)
                return -1;
            if (rc == 1 && cl->trips[i] == target)
                busy--;
        }
    }
    return 0;
}

/* Each socket costs this process about two descriptors: its mailbox and
 * its TCP connection. */
static int fds_enough(int conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < 200 ||
        (rlim_t)conns > (rl.rlim_cur - 200) / 2) {
        fprintf(stderr, "bench-zmq: %d clients need about %d descriptors, over the limit\n", conns,
                2 * conns + 200);
        return 0;
    }
    return 1;
}

static int clients_open(struct clients *cl, int port, int conns)
{
    char ep[64];
    int linger = 0; /* so zmq_ctx_term never waits on a client */
    snprintf(ep, sizeof ep, ENDPOINT ":%d", port);
    if (!(cl->ctx = zmq_ctx_new()) || zmq_ctx_set(cl->ctx, ZMQ_MAX_SOCKETS, conns + 16) < 0)
        return -1;
    for (; cl->open < conns; cl->open++) {
        void *s = zmq_socket(cl->ctx, ZMQ_DEALER);
        if (!s)
            return -1;
        cl->items[cl->open] = (zmq_pollitem_t){ .socket = s, .events = ZMQ_POLLIN };
        if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) < 0 || zmq_connect(s, ep) < 0)
            return -1;
    }
    return 0;
}

static void clients_close(struct clients *cl)
{
    for (int i = 0; i < cl->open; i++)
        zmq_close(cl->items[i].socket);
    if (cl->ctx)
        zmq_ctx_term(cl->ctx);
    free(cl->items);
    free(cl->trips);
}

int t_echo_clients(int port, pid_t server, int conns, int rounds, struct bench_echo_result *r)
{
    struct clients cl = { .items = calloc((size_t)conns, sizeof *cl.items),
                          .trips = calloc((size_t)conns, sizeof *cl.trips) };
    long rss_before = bench_rss_kib(server);
    double t0 = bench_now(), deadline = t0 + RUN_LIMIT_S;
    int rc = -1;
    if (!fds_enough(conns) || !cl.items || !cl.trips)
        goto out;
    /* zmq connects in the background: open means connected and echoed once. */
    if (clients_open(&cl, port, conns) < 0 || echo_rounds(&cl, conns, 1, deadline) < 0) {
        zmq_fail("open clients");
        goto out;
    }
    r->open_s = bench_now() - t0;
    usleep(200000);
    r->rss_kib_per_conn = (double)(bench_rss_kib(server) - rss_before) / conns;
    t0 = bench_now();
    if (echo_rounds(&cl, conns, rounds, deadline) < 0) {
        zmq_fail("echo rounds");
        goto out;
    }
    r->trips_per_s = (double)conns * rounds / (bench_now() - t0);
    rc = 0;
out:
    clients_close(&cl);
    return rc;
}

/* The ROUTER speaks ZMTP, not sockmsg frames, so the hand-written client
 * cannot talk to it; and DEALERs connect in the background, which the
 * server workload's open time already measures. */
int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r)
{
    (void)port, (void)conns, (void)echoes, (void)raw, (void)r;
    return BENCH_UNSUPPORTED;
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

/* No hs workload: its connections (PAIR) do not talk to its echo server (ROUTER). */
int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r)
{
    (void)port, (void)count, (void)echoes, (void)raw, (void)r;
    return BENCH_UNSUPPORTED;
}
