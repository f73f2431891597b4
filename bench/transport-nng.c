/* nng: nng as a baseline, pair1 sockets for lat and thr (one peer, so
 * "accept" is the listening socket itself).  Settings are nng's defaults
 * unless a comment says why. */
#include "bench.h"

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>

const char t_name[] = "nng";

#define HANGUP_WAIT_MS 10000

struct bench_listener {
    nng_socket sock;
    struct peer *peer;
};

/* Whether the peer has hung up, told by a pipe callback. */
struct peer {
    nng_mtx *mtx;
    nng_cv *cv;
    int gone;
};

struct bench_conn {
    nng_socket sock;
    struct peer *peer;
    int owner;     /* closes sock; not so for the accepted side */
    int sent_last; /* the last call was a send */
    nng_msg *msg;  /* the last message received */
};

static void nng_fail(const char *what, int rv)
{
    fprintf(stderr, "bench-nng: %s: %s\n", what, nng_strerror(rv));
}

static void peer_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct peer *peer = arg;
    (void)p, (void)ev;
    nng_mtx_lock(peer->mtx);
    peer->gone = 1;
    nng_cv_wake(peer->cv);
    nng_mtx_unlock(peer->mtx);
}

/* A pair1 socket that takes messages of any size (RECVMAXSZ 0).  nng
 * 1.5.2 already defaults to 0; set anyway, as thr sends 1 MiB messages
 * and a build with a limit would drop the connection on them. */
static int open_socket(nng_socket *sock, struct peer **peer)
{
    int rv;
    if (!(*peer = calloc(1, sizeof **peer)))
        return -1;
    if ((rv = nng_mtx_alloc(&(*peer)->mtx)) != 0 ||
        (rv = nng_cv_alloc(&(*peer)->cv, (*peer)->mtx)) != 0 || (rv = nng_pair1_open(sock)) != 0 ||
        (rv = nng_socket_set_size(*sock, NNG_OPT_RECVMAXSZ, 0)) != 0 ||
        (rv = nng_pipe_notify(*sock, NNG_PIPE_EV_REM_POST, peer_removed, *peer)) != 0) {
        nng_fail("socket", rv);
        return -1;
    }
    return 0;
}

int t_listen(bench_listener **l, int *port)
{
    nng_listener nl;
    int rv;
    if (!(*l = calloc(1, sizeof **l)) || open_socket(&(*l)->sock, &(*l)->peer) < 0)
        return -1;
    if ((rv = nng_listener_create(&nl, (*l)->sock, "tcp://127.0.0.1:0")) != 0 ||
        (rv = nng_listener_start(nl, 0)) != 0 ||
        (rv = nng_listener_get_int(nl, NNG_OPT_TCP_BOUND_PORT, port)) != 0) {
        nng_fail("listen", rv);
        return -1;
    }
    return 0;
}

static int conn_new(nng_socket sock, struct peer *peer, int owner, bench_conn **c)
{
    if (!(*c = calloc(1, sizeof **c)))
        return -1;
    (*c)->sock = sock;
    (*c)->peer = peer;
    (*c)->owner = owner;
    return 0;
}

int t_accept(bench_listener *l, bench_conn **c)
{
    return conn_new(l->sock, l->peer, 0, c);
}

static void peer_free(struct peer *peer)
{
    nng_cv_free(peer->cv);
    nng_mtx_free(peer->mtx);
    free(peer);
}

void t_listener_close(bench_listener *l)
{
    nng_close(l->sock);
    peer_free(l->peer);
    free(l);
}

int t_connect(int port, bench_conn **c)
{
    char url[64];
    nng_socket sock;
    struct peer *peer;
    int rv;
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    if (open_socket(&sock, &peer) < 0)
        return -1;
    if ((rv = nng_dial(sock, url, NULL, 0)) != 0) {
        nng_fail("dial", rv);
        return -1;
    }
    return conn_new(sock, peer, 1, c);
}

/* `more` is not passed on: nng has no notion of it. */
int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    (void)more;
    int rv = nng_send(c->sock, (void *)msg, len, 0);
    if (rv != 0) {
        nng_fail("send", rv);
        return -1;
    }
    c->sent_last = 1;
    return 0;
}

ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    int rv;
    if (c->msg)
        nng_msg_free(c->msg);
    c->msg = NULL;
    if ((rv = nng_recvmsg(c->sock, &c->msg, 0)) != 0) {
        nng_fail("receive", rv);
        return -1;
    }
    c->sent_last = 0;
    *msg = nng_msg_body(c->msg);
    return (ssize_t)nng_msg_len(c->msg);
}

/* nng_send returns once the message is queued, and nng_close does not
 * linger: closing right after the last send (the lat echo, the thr ack)
 * could lose it.  The peer hangs up once it has read that message, so
 * wait for that, for a bounded time. */
static void wait_hangup(struct peer *peer)
{
    nng_time until = nng_clock() + HANGUP_WAIT_MS;
    nng_mtx_lock(peer->mtx);
    while (!peer->gone && nng_cv_until(peer->cv, until) == 0)
        ;
    nng_mtx_unlock(peer->mtx);
}

void t_close(bench_conn *c)
{
    if (c->sent_last)
        wait_hangup(c->peer);
    if (c->msg)
        nng_msg_free(c->msg);
    if (c->owner) {
        nng_close(c->sock);
        peer_free(c->peer);
    }
    free(c);
}

/* nng cannot address one connection of many from one socket, so it has
 * no echo server for many clients here. */
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

/* No hs workload: no echo server. */
int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r)
{
    (void)port, (void)count, (void)echoes, (void)raw, (void)r;
    return BENCH_UNSUPPORTED;
}
