/* sockmsg-uv: the server workload's echo server served from a libuv loop.
 * It is transport-sockmsg.c's sm_server (the same handler: sm_server_send
 * of each message back from on_message), attached to a uv_loop_t with
 * sm_uv_attach (include/sockmsg/adapters/libuv.h) and run by uv_run
 * instead of sm_server_run; the clients are the same hand-written epoll
 * clients (bench_framed_clients).  The conn workload's hand-written
 * client ("raw") runs against it too.  No lat or thr: this transport has
 * no connection of its own (see sockmsg-nb for the non-blocking one). */
#include "bench.h"

#include <sockmsg/adapters/libuv.h>
#include <sockmsg/sockmsg.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

const char t_name[] = "sockmsg-uv";

static sm_server *server;

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

/* sm_server_stop is async-signal-safe and wakes the loop: the adapter
 * sees the stop, closes every client and stops watching, so uv_run
 * returns. */
static void on_term(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

static int failed(const char *what, int rc)
{
    fprintf(stderr, "bench-sockmsg-uv: %s: %s (%s)\n", what, sm_strerror(rc), sm_last_error());
    return -1;
}

int t_echo_server(void)
{
    sm_server_handlers h = { .on_message = on_message };
    char addr[SM_ADDRSTRLEN];
    uv_loop_t loop;
    sm_uv_adapter *adapter;
    int rc;
    if ((rc = sm_server_new(&server, &h, NULL, NULL)) < 0 ||
        (rc = sm_server_listen(server, "127.0.0.1:0")) < 0 ||
        (rc = sm_server_addr(server, 0, addr, sizeof addr)) < 0)
        return failed("server", rc);
    if ((rc = uv_loop_init(&loop)) < 0) {
        fprintf(stderr, "bench-sockmsg-uv: uv_loop_init: %s\n", uv_strerror(rc));
        return -1;
    }
    if ((rc = sm_uv_attach(server, &loop, &adapter)) < 0)
        return failed("sm_uv_attach", rc);
    signal(SIGTERM, on_term);
    bench_ready(atoi(strrchr(addr, ':') + 1));
    uv_run(&loop, UV_RUN_DEFAULT); /* until the stop */
    int status = sm_uv_status(adapter);
    sm_uv_detach(adapter);
    uv_run(&loop, UV_RUN_DEFAULT); /* libuv closes the adapter's handles */
    if (uv_loop_close(&loop) < 0)
        fprintf(stderr, "bench-sockmsg-uv: the loop still has handles\n");
    sm_server_free(server);
    return status == SM_ESTOPPED ? 0 : failed("serving", status);
}

int t_echo_clients(int port, pid_t server_pid, int conns, int rounds, struct bench_echo_result *r)
{
    return bench_framed_clients(port, server_pid, conns, rounds, r);
}

/* Only the hand-written client: the library's is sockmsg's. */
int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r)
{
    return raw ? bench_raw_conn_clients(port, conns, echoes, r) : BENCH_UNSUPPORTED;
}

/* ---- the other workloads: not this transport's ---- */

static int no_connections(void)
{
    fprintf(stderr, "bench-sockmsg-uv: no lat or thr: only the server and conn workloads\n");
    return -1;
}

int t_listen(bench_listener **l, int *port)
{
    (void)l, (void)port;
    return no_connections();
}

int t_accept(bench_listener *l, bench_conn **c)
{
    (void)l, (void)c;
    return no_connections();
}

void t_listener_close(bench_listener *l)
{
    (void)l;
}

int t_connect(int port, bench_conn **c)
{
    (void)port, (void)c;
    return no_connections();
}

int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    (void)c, (void)msg, (void)len, (void)more;
    return no_connections();
}

ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    (void)c, (void)msg;
    return no_connections();
}

void t_close(bench_conn *c)
{
    (void)c;
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
