/* sockmsg: the library's blocking API for lat and thr, sm_server for the
 * server and conn workloads, and its non-blocking API for the conn
 * workload's client.  The "more" variant is the fast path for streams:
 * SM_MORE on the sender, sm_recv_view on the receiver. */
#include "bench.h"

#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

const char t_name[] = "sockmsg";

struct bench_listener {
    sm_listener *l;
};

struct bench_conn {
    sm_conn *c;
    void *buf; /* sm_recv copies the message here */
    size_t cap;
};

static int failed(const char *what)
{
    fprintf(stderr, "bench-sockmsg: %s: %s\n", what, sm_last_error());
    return -1;
}

static int local_port(const char *addr)
{
    const char *colon = addr;
    for (const char *p = addr; *p; p++)
        if (*p == ':')
            colon = p;
    return atoi(colon + 1);
}

int t_listen(bench_listener **l, int *port)
{
    char addr[SM_ADDRSTRLEN];
    if (!(*l = malloc(sizeof **l)))
        return -1;
    if (sm_listen(&(*l)->l, "127.0.0.1:0") < 0 || sm_listener_addr((*l)->l, addr, sizeof addr) < 0)
        return failed("listen");
    *port = local_port(addr);
    return 0;
}

static int conn_new(sm_conn *sc, bench_conn **c)
{
    if (!(*c = calloc(1, sizeof **c)))
        return -1;
    (*c)->c = sc;
    return 0;
}

int t_accept(bench_listener *l, bench_conn **c)
{
    sm_conn *sc;
    return sm_accept(l->l, &sc) < 0 ? failed("accept") : conn_new(sc, c);
}

void t_listener_close(bench_listener *l)
{
    sm_listener_close(l->l);
    free(l);
}

int t_connect(int port, bench_conn **c)
{
    char addr[64];
    sm_conn *sc;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    return sm_connect(&sc, addr) < 0 ? failed("connect") : conn_new(sc, c);
}

int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    return sm_send_flags(c->c, msg, len, more ? SM_MORE : 0);
}

/* The plain API copies into the caller's buffer, as a user would. */
static ssize_t recv_copy(bench_conn *c, const uint8_t **msg)
{
    for (;;) {
        ssize_t len = sm_recv(c->c, c->buf, c->cap);
        if (len != SM_EMSGSIZE) {
            *msg = c->buf;
            return len;
        }
        free(c->buf);
        c->cap = c->cap ? c->cap * 2 : 4096;
        if (!(c->buf = malloc(c->cap)))
            return -1;
    }
}

ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    if (!bench_more)
        return recv_copy(c, msg);
    const void *view;
    ssize_t len = sm_recv_view(c->c, &view);
    *msg = view;
    return len;
}

void t_close(bench_conn *c)
{
    sm_close(c->c);
    free(c->buf);
    free(c);
}

/* ---- the server workload ---- */

static sm_server *server;

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

static void on_term(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

int t_echo_server(void)
{
    sm_server_handlers h = { .on_message = on_message };
    char addr[SM_ADDRSTRLEN];
    if (sm_server_new(&server, &h, NULL, NULL) < 0 || sm_server_listen(server, "127.0.0.1:0") < 0 ||
        sm_server_addr(server, 0, addr, sizeof addr) < 0)
        return failed("server");
    signal(SIGTERM, on_term);
    bench_ready(local_port(addr));
    int rc = sm_server_run(server);
    sm_server_free(server);
    return rc < 0 ? failed("server run") : 0;
}

int t_echo_clients(int port, pid_t server_pid, int conns, int rounds, struct bench_echo_result *r)
{
    return bench_framed_clients(port, server_pid, conns, rounds, r);
}

/* ---- the conn workload's client: the non-blocking API in an epoll loop ---- */

struct nb_client {
    sm_conn *c;
    int trips;       /* completed round trips */
    int connecting;  /* the first request is not sent yet */
    uint32_t events; /* what epoll watches for it */
};

/* What the connection waits for, as epoll events. */
static uint32_t wanted(const sm_conn *c)
{
    int want = sm_conn_events(c);
    return (want & SM_WANT_READ ? EPOLLIN : 0u) | (want & SM_WANT_WRITE ? EPOLLOUT : 0u);
}

static int nb_watch(int ep, struct nb_client *k, int i, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.u32 = (uint32_t)i };
    int op = k->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (events == k->events)
        return 0;
    k->events = events;
    return epoll_ctl(ep, op, sm_conn_fd(k->c), &ev);
}

static int nb_request(struct nb_client *k, int i)
{
    uint8_t msg[BENCH_ECHO_SIZE];
    bench_fill(msg, sizeof msg, bench_echo_seq(i, k->trips));
    /* 0 also when the socket could not take it: then it is held and goes
     * with the next receive; SM_EAGAIN only when too much is held. */
    return sm_send(k->c, msg, sizeof msg);
}

/* Client i's socket is ready: finishes the connect and sends the first
 * request, or takes the echo and sends the next.  Returns 1 when its last
 * echo is in, 0 to wait for what it watches, <0 on failure. */
static int nb_ready(struct nb_client *k, int i, int echoes)
{
    int rc;
    if (k->connecting) {
        if ((rc = sm_conn_connected(k->c)) != 0)
            return rc == SM_EAGAIN ? 0 : failed("connect");
        k->connecting = 0;
        return nb_request(k, i) < 0 ? failed("send") : 0;
    }
    uint8_t echo[BENCH_ECHO_SIZE];
    ssize_t len = sm_recv(k->c, echo, sizeof echo);
    if (len == SM_EAGAIN)
        return 0;
    if (len < 0)
        return failed("receive");
    if (bench_check(echo, len, sizeof echo, bench_echo_seq(i, k->trips), 1) < 0) {
        fprintf(stderr, "bench-sockmsg: client %d: wrong echo\n", i);
        return -1;
    }
    if (++k->trips == echoes)
        return 1;
    /* One request in flight: no other message can be buffered. */
    return nb_request(k, i) < 0 ? failed("send") : 0;
}

int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r)
{
    if (raw)
        return bench_raw_conn_clients(port, conns, echoes, r);
    sm_options opt = { .nonblocking = 1 };
    char addr[64];
    struct nb_client *cl = calloc((size_t)conns, sizeof *cl);
    struct epoll_event ev[256];
    int ep = epoll_create1(EPOLL_CLOEXEC), opened = 0, done = 0, rc = -1;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    double t0 = bench_now(), deadline = t0 + BENCH_CONN_LIMIT_S;
    /* Until the first request is sent, each waits for writability, as the
     * hand-written client does (even when its connect finished at once). */
    for (; cl && ep >= 0 && opened < conns && bench_now() < deadline; opened++) {
        struct nb_client *k = &cl[opened];
        k->connecting = 1;
        if (sm_connect_opts(&k->c, addr, &opt) < 0) {
            failed("connect");
            goto out;
        }
        if (nb_watch(ep, k, opened, EPOLLOUT) < 0) {
            perror("bench-sockmsg: epoll_ctl");
            opened++;
            goto out;
        }
    }
    if (opened < conns) {
        fprintf(stderr, "bench-sockmsg: %d of %d connects started\n", opened, conns);
        goto out;
    }
    r->open_ms = (bench_now() - t0) * 1e3;
    while (done < conns) {
        if (bench_now() > deadline) {
            fprintf(stderr, "bench-sockmsg: %d of %d clients done after %d s\n", done, conns,
                    BENCH_CONN_LIMIT_S);
            goto out;
        }
        int n = epoll_wait(ep, ev, 256, 1000);
        if (n < 0 && errno != EINTR) {
            perror("bench-sockmsg: epoll_wait");
            goto out;
        }
        for (int j = 0; j < n; j++) {
            int i = (int)ev[j].data.u32;
            int step = nb_ready(&cl[i], i, echoes);
            if (step < 0)
                goto out;
            done += step;
            if (!cl[i].connecting && nb_watch(ep, &cl[i], i, wanted(cl[i].c)) < 0) {
                perror("bench-sockmsg: epoll_ctl");
                goto out;
            }
        }
    }
    r->total_ms = (bench_now() - t0) * 1e3;
    rc = 0;
out:
    for (int i = 0; i < opened; i++)
        sm_close(cl[i].c);
    if (ep >= 0)
        close(ep);
    free(cl);
    return rc;
}
