/* sockmsg: the library's blocking API for lat and thr, sm_server for the
 * server and conn workloads, and its non-blocking API for the conn
 * workload's client; sm_server on both ends of the links and reconnect
 * workloads, the server's own dialled links (sm_server_connect).  The
 * "more" variant is the fast path for streams: SM_MORE on the sender,
 * sm_recv_view on the receiver. */
#include "bench.h"

#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
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

/* The echo server on 127.0.0.1:port (0: a free one), until SIGTERM. */
static int echo_on(long port, long unused)
{
    (void)unused;
    sm_server_handlers h = { .on_message = on_message };
    char addr[SM_ADDRSTRLEN];
    snprintf(addr, sizeof addr, "127.0.0.1:%ld", port);
    if (sm_server_new(&server, &h, NULL, NULL) < 0 || sm_server_listen(server, addr) < 0 ||
        sm_server_addr(server, 0, addr, sizeof addr) < 0)
        return failed("server");
    signal(SIGTERM, on_term);
    bench_ready(local_port(addr));
    int rc = sm_server_run(server);
    sm_server_free(server);
    return rc < 0 ? failed("server run") : 0;
}

int t_echo_server(void)
{
    return echo_on(0, 0);
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

/* ---- links and reconnect: sm_server's own dialled links ---- */

#define PHASE_LIMIT_S 60 /* no phase of either workload may take longer */

/* 1 once the child has ended (it is left to be reaped), else 0. */
static int child_gone(pid_t pid)
{
    siginfo_t info = { 0 };
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

/* Runs s's loop until *count reaches want (count NULL: until the time
 * `until`, as bench_now()), never waiting more than 100 ms at once.
 * Fails when `until` passes first, *bad is set (bad may be NULL) or the
 * child `watch` ends. */
static int loop_until(sm_server *s, const int *count, int want, double until, const int *bad,
                      pid_t watch)
{
    double checked = bench_now();
    while (!count || *count < want) {
        if (bad && *bad)
            return -1;
        double now = bench_now(), left = until - now;
        if (left <= 0)
            return count ? -1 : 0;
        if (watch && now - checked > 0.1) {
            checked = now;
            if (child_gone(watch)) {
                fprintf(stderr, "bench-sockmsg: the echo server ended early\n");
                return -1;
            }
        }
        int cap = left < 0.1 ? (int)(left * 1e3) + 1 : 100, t = sm_server_timeout(s);
        int rc = sm_server_run_once(s, t < 0 || t > cap ? cap : t);
        if (rc < 0 && rc != -EINTR)
            return failed("sm_server_run_once");
    }
    return 0;
}

/* The links workload's measuring side: one request in flight per link. */
struct link {
    sm_conn_id id;
    int index;
    int trips; /* completed round trips */
};

struct links {
    struct link *link;
    int conns, opened, done, target, bad, stopping;
    double last_echo; /* when the last link finished the round */
};

static int link_request(sm_server *s, struct link *k)
{
    uint8_t msg[BENCH_ECHO_SIZE];
    bench_fill(msg, sizeof msg, bench_echo_seq(k->index, k->trips));
    return sm_server_send(s, k->id, msg, sizeof msg);
}

/* The same handlers whichever side made the link. */
static void links_open(sm_server *s, sm_conn_id id, void *arg)
{
    struct links *L = arg;
    if (L->opened == L->conns) {
        L->bad = 1; /* a link came up again, or one too many */
        return;
    }
    struct link *k = &L->link[L->opened];
    *k = (struct link){ .id = id, .index = L->opened++ };
    sm_server_set_data(s, id, k);
}

static void links_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    struct links *L = arg;
    struct link *k = sm_server_data(s, id);
    uint64_t seq = k ? bench_echo_seq(k->index, k->trips) : 0;
    if (!k || bench_check(msg, (ssize_t)len, BENCH_ECHO_SIZE, seq, 1) < 0) {
        L->bad = 1;
        return;
    }
    if (++k->trips < L->target) {
        if (link_request(s, k) < 0)
            L->bad = 1;
    } else if (++L->done == L->conns) {
        L->last_echo = bench_now();
    }
}

static void links_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)s, (void)id;
    struct links *L = arg;
    if (!L->stopping) {
        fprintf(stderr, "bench-sockmsg: a link closed: %s\n", sm_strerror(reason));
        L->bad = 1;
    }
}

/* One more round trip on every link, all in flight at once; the seconds
 * from the first request to the last echo, or -1. */
static double links_rounds(sm_server *s, struct links *L, int rounds, pid_t child)
{
    L->target = L->link[0].trips + rounds;
    L->done = 0;
    double t0 = bench_now();
    for (int i = 0; i < L->conns; i++)
        if (link_request(s, &L->link[i]) < 0)
            return failed("send");
    if (loop_until(s, &L->done, L->conns, t0 + PHASE_LIMIT_S, &L->bad, child) < 0)
        return -1;
    return L->last_echo - t0;
}

/* The echo server of the accepted side: it makes the conns connections
 * to port with connect(), then serves each as if accepted. */
static int echo_adopted(long port, long conns)
{
    sm_server_handlers h = { .on_message = on_message };
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (sm_server_new(&server, &h, NULL, NULL) < 0)
        return failed("server");
    signal(SIGTERM, on_term);
    bench_ready(0);
    for (long i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            fprintf(stderr, "bench-sockmsg: connection %ld: %s\n", i, strerror(errno));
            return -1;
        }
        if (sm_server_adopt(server, fd, NULL) < 0)
            return failed("adopt");
    }
    int rc = sm_server_run(server);
    sm_server_free(server);
    return rc < 0 ? failed("server run") : 0;
}

int t_links(int conns, int rounds, int dialled, struct bench_links_result *r)
{
    sm_server_handlers h = { .on_open = links_open,
                             .on_message = links_message,
                             .on_close = links_close };
    struct links L = { .link = calloc((size_t)conns, sizeof *L.link), .conns = conns };
    struct bench_ready_msg m;
    char addr[SM_ADDRSTRLEN];
    sm_server *s = NULL;
    pid_t child = 0;
    int ready, rc = -1;
    double t0 = bench_now();
    if (!L.link || sm_server_new(&s, &h, NULL, &L) < 0) {
        failed("server");
        goto out;
    }
    if (dialled) {
        /* The echo server listens; this server dials every link. */
        child = bench_spawn(echo_on, 0, 0, &ready);
        if (bench_wait_ready(ready, PHASE_LIMIT_S, &m) < 0)
            goto out;
        snprintf(addr, sizeof addr, "127.0.0.1:%d", m.port);
        t0 = bench_now();
        for (int i = 0; i < conns; i++)
            if (sm_server_connect(s, addr, NULL, NULL) < 0) {
                failed("sm_server_connect");
                goto out;
            }
    } else {
        /* This server listens; the echo server makes every link. */
        if (sm_server_listen(s, "127.0.0.1:0") < 0 || sm_server_addr(s, 0, addr, sizeof addr) < 0) {
            failed("listen");
            goto out;
        }
        t0 = bench_now();
        child = bench_spawn(echo_adopted, local_port(addr), conns, &ready);
        if (bench_wait_ready(ready, PHASE_LIMIT_S, &m) < 0)
            goto out;
    }
    if (loop_until(s, &L.opened, conns, t0 + PHASE_LIMIT_S, &L.bad, child) < 0) {
        fprintf(stderr, "bench-sockmsg: %d of %d links up\n", L.opened, conns);
        goto out;
    }
    r->open_ms = (bench_now() - t0) * 1e3;
    /* One untimed round trip each, then the measured rounds. */
    double t = links_rounds(s, &L, 1, child);
    if (t > 0)
        t = links_rounds(s, &L, rounds, child);
    if (t > 0) {
        r->trips_per_s = (double)conns * rounds / t;
        rc = 0;
    } else {
        fprintf(stderr, "bench-sockmsg: %d of %d links done%s\n", L.done, conns,
                L.bad ? ", one failed" : "");
    }
out:
    L.stopping = 1;
    sm_server_free(s);
    if (child && bench_end(child, SIGTERM) < 0) {
        fprintf(stderr, "bench-sockmsg: the echo server failed\n");
        rc = -1;
    }
    free(L.link);
    return rc;
}

/* The reconnect workload's dialling side. */
struct redial {
    int opens, closes, echoes, retries, bad;
    uint64_t want;        /* the sequence number of the echo awaited */
    double echo_at;       /* when it came */
    double retry_at;      /* the last on_retry: when */
    int retry_delay;      /* and its delay_ms */
    int open_retries;     /* at the last on_open: on_retry calls so far */
    double open_retry_at; /* and the last one's time and delay */
    int open_delay;
};

static void redial_open(sm_server *s, sm_conn_id id, void *arg)
{
    (void)s, (void)id;
    struct redial *d = arg;
    d->opens++;
    d->open_retries = d->retries;
    d->open_retry_at = d->retry_at;
    d->open_delay = d->retry_delay;
}

static void redial_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)s, (void)id;
    struct redial *d = arg;
    d->echo_at = bench_now();
    if (bench_check(msg, (ssize_t)len, BENCH_ECHO_SIZE, d->want, 1) < 0)
        d->bad = 1;
    d->echoes++;
}

static void redial_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)s, (void)id, (void)reason;
    ((struct redial *)arg)->closes++;
}

static void redial_retry(sm_server *s, sm_conn_id id, int reason, int delay_ms, void *arg)
{
    (void)s, (void)id, (void)reason;
    struct redial *d = arg;
    d->retries++;
    d->retry_at = bench_now();
    d->retry_delay = delay_ms;
}

/* Queues echo request seq on the link (also while it is down). */
static int redial_probe(sm_server *s, sm_conn_id link, struct redial *d, uint64_t seq)
{
    uint8_t msg[BENCH_ECHO_SIZE];
    bench_fill(msg, sizeof msg, seq);
    d->want = seq;
    return sm_server_send(s, link, msg, sizeof msg) < 0 ? failed("send") : 0;
}

int t_reconnect(int pause_ms, int times, struct bench_reconnect_result *r)
{
    sm_server_handlers h = { redial_open, redial_message, redial_close, redial_retry };
    struct redial d = { 0 };
    struct bench_ready_msg m;
    char addr[64];
    sm_server *s = NULL;
    sm_conn_id link;
    int ready, rc = -1;
    pid_t child = bench_spawn(echo_on, 0, 0, &ready);
    if (bench_wait_ready(ready, PHASE_LIMIT_S, &m) < 0)
        goto out;
    int port = m.port;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    /* The default backoff: 100 ms doubling to 5 s, with jitter. */
    if (sm_server_new(&s, &h, NULL, &d) < 0 || sm_server_connect(s, addr, NULL, &link) < 0) {
        failed("dial");
        goto out;
    }
    if (loop_until(s, &d.opens, 1, bench_now() + PHASE_LIMIT_S, NULL, child) < 0 ||
        redial_probe(s, link, &d, 0) < 0 ||
        loop_until(s, &d.echoes, 1, bench_now() + PHASE_LIMIT_S, &d.bad, child) < 0)
        goto out;
    for (int i = 0; i < times; i++) {
        /* The echo server dies; its link drops, and the next echo request
         * waits in the link's queue. */
        pid_t gone = child;
        child = 0;
        if (bench_end(gone, SIGKILL) < 0)
            goto out;
        double killed = bench_now();
        int tries = d.retries;
        if (loop_until(s, &d.closes, i + 1, killed + PHASE_LIMIT_S, NULL, 0) < 0 ||
            redial_probe(s, link, &d, (uint64_t)i + 1) < 0)
            goto out;
        /* The pause, the loop running (tries failing), then a new echo
         * server on the same port. */
        loop_until(s, NULL, 0, killed + pause_ms / 1e3, NULL, 0);
        child = bench_spawn(echo_on, port, 0, &ready);
        if (loop_until(s, &d.echoes, i + 2, bench_now() + PHASE_LIMIT_S, &d.bad, child) < 0 ||
            bench_wait_ready(ready, PHASE_LIMIT_S, &m) < 0 || m.port != port) {
            fprintf(stderr, "bench-sockmsg: restart %d: no echo%s\n", i + 1,
                    d.bad ? " (a wrong one)" : "");
            goto out;
        }
        if (d.opens != i + 2 || d.open_retries == tries) {
            fprintf(stderr,
                    "bench-sockmsg: restart %d: %d link-ups, %d failed tries in the pause "
                    "(a longer pause is needed for a wait on_retry announced)\n",
                    i + 1, d.opens, d.open_retries - tries);
            goto out;
        }
        r->reconnect_ms[i] = (d.echo_at - m.at) * 1e3;
        r->wait_ms[i] = d.open_delay;
        r->late_ms[i] = (d.echo_at - d.open_retry_at) * 1e3 - d.open_delay;
    }
    rc = 0;
out:
    sm_server_free(s);
    if (child && bench_end(child, SIGTERM) < 0) {
        fprintf(stderr, "bench-sockmsg: the echo server failed\n");
        rc = -1;
    }
    return rc;
}

/* The library's blocking client (sm_connect, sm_send, sm_recv, sm_close);
 * no other client of its own. */
int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r)
{
    return raw ? BENCH_UNSUPPORTED : bench_hs_clients(port, count, echoes, r);
}
