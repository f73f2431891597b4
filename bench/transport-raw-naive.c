/* raw-naive: plain blocking sockets, the way a first program does it: one
 * writev (header + payload) per message; read 4 bytes, then the payload. */
#include "bench.h"
#include "rawsock.h"

#include <stdlib.h>
#include <unistd.h>

const char t_name[] = "raw-naive";

struct bench_listener {
    int fd;
};

struct bench_conn {
    int fd;
    uint8_t *buf;
    size_t cap;
};

int t_listen(bench_listener **l, int *port)
{
    *l = malloc(sizeof **l);
    return *l && ((*l)->fd = raw_listen(port)) >= 0 ? 0 : -1;
}

static int conn_new(int fd, bench_conn **c)
{
    if (fd < 0 || !(*c = calloc(1, sizeof **c)))
        return -1;
    (*c)->fd = fd;
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

int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    (void)more;
    uint8_t h[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                     (uint8_t)len };
    struct iovec iov[2] = { { h, 4 }, { (void *)msg, len } };
    return raw_writev_all(c->fd, iov, 2);
}

ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    uint8_t h[4];
    if (raw_read_exact(c->fd, h, 4) < 0)
        return -1;
    size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (len > c->cap) {
        uint8_t *p = realloc(c->buf, len);
        if (!p)
            return -1;
        c->buf = p;
        c->cap = len;
    }
    if (raw_read_exact(c->fd, c->buf, len) < 0)
        return -1;
    *msg = c->buf;
    return (ssize_t)len;
}

void t_close(bench_conn *c)
{
    close(c->fd);
    free(c->buf);
    free(c);
}

/* The naive loop has no server of its own for many clients. */
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
