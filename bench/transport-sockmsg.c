/* sockmsg: the library's blocking API for lat and thr, sm_server for the
 * server workload.  The "more" variant is the fast path for streams:
 * SM_MORE on the sender, sm_recv_view on the receiver. */
#include "bench.h"

#include <sockmsg/sockmsg.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

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
