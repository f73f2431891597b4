/* The workloads, written once for every transport: see bench.h. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEQ_LEN 8
#define CHECK_EVERY 1024 /* thr: full payload check on every 1024th message */
#define RUN_LIMIT_S 300  /* no run may take longer than this */

int bench_more; /* the "more" variant: see t_send() */
char bench_note[256];
static int ready_pipe = -1;

void bench_die(const char *what, const char *detail)
{
    fprintf(stderr, "bench-%s: %s: %s\n", t_name, what, detail ? detail : "failed");
    exit(1);
}

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long bench_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static uint8_t pattern_byte(size_t i)
{
    return (uint8_t)(i * 7 + 1);
}

void bench_fill(uint8_t *msg, size_t size, uint64_t seq)
{
    for (size_t i = SEQ_LEN; i < size; i++)
        msg[i] = pattern_byte(i);
    memcpy(msg, &seq, SEQ_LEN);
}

int bench_check(const uint8_t *msg, ssize_t len, size_t size, uint64_t seq, int full)
{
    uint64_t got;
    if (len != (ssize_t)size)
        return -1;
    memcpy(&got, msg, SEQ_LEN);
    if (got != seq)
        return -1;
    for (size_t i = SEQ_LEN; full && i < size; i++)
        if (msg[i] != pattern_byte(i))
            return -1;
    return 0;
}

void bench_ready(int port)
{
    struct bench_ready_msg m = { .port = port, .at = bench_now() };
    /* Less than PIPE_BUF: written whole. */
    if (write(ready_pipe, &m, sizeof m) != sizeof m)
        bench_die("ready", strerror(errno));
}

/* The server side of lat and thr: listen, tell the parent, take one client. */
static bench_conn *accept_one(bench_listener **l)
{
    bench_conn *c;
    int port;
    if (t_listen(l, &port) < 0)
        bench_die("listen", NULL);
    bench_ready(port);
    if (t_accept(*l, &c) < 0)
        bench_die("accept", NULL);
    return c;
}

/* ---- lat: ping-pong ---- */

static int lat_server(size_t size, long total)
{
    bench_listener *l;
    bench_conn *c = accept_one(&l);
    const uint8_t *msg;
    for (long i = 0; i < total; i++) {
        ssize_t len = t_recv(c, &msg);
        if (bench_check(msg, len, size, (uint64_t)i, 0) < 0)
            bench_die("lat server", "wrong message");
        if (t_send(c, msg, (size_t)len, 0) < 0)
            bench_die("lat server", "send");
    }
    t_close(c);
    t_listener_close(l);
    return 0;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int lat_client(int port, size_t size, long warm, long count)
{
    bench_conn *c;
    const uint8_t *echo;
    uint8_t *msg = malloc(size);
    double *rtt = malloc((size_t)count * sizeof *rtt), sum = 0;
    if (!msg || !rtt || t_connect(port, &c) < 0)
        bench_die("lat client", "setup");
    bench_fill(msg, size, 0);
    for (long i = 0; i < warm + count; i++) {
        uint64_t seq = (uint64_t)i;
        memcpy(msg, &seq, SEQ_LEN);
        double t0 = bench_now();
        if (t_send(c, msg, size, 0) < 0)
            bench_die("lat client", "send");
        ssize_t len = t_recv(c, &echo);
        double t = bench_now() - t0;
        if (bench_check(echo, len, size, seq, 1) < 0)
            bench_die("lat client", "wrong echo");
        if (i >= warm) {
            rtt[i - warm] = t * 1e6;
            sum += t * 1e6;
        }
    }
    t_close(c);
    qsort(rtt, (size_t)count, sizeof *rtt, compare_double);
    printf("transport=%s workload=lat size=%zu count=%ld mean_us=%.2f p50_us=%.2f "
           "p99_us=%.2f%s%s\n",
           t_name, size, count, sum / (double)count, rtt[count / 2], rtt[count * 99 / 100],
           bench_note[0] ? " " : "", bench_note);
    free(msg);
    free(rtt);
    return 0;
}

/* ---- thr: one-way stream, then an acknowledgement ---- */

static int thr_server(size_t size, long count)
{
    bench_listener *l;
    bench_conn *c = accept_one(&l);
    const uint8_t *msg;
    for (long i = 0; i < count; i++) {
        ssize_t len = t_recv(c, &msg);
        int full = i % CHECK_EVERY == 0 || i == count - 1;
        if (bench_check(msg, len, size, (uint64_t)i, full) < 0) {
            fprintf(stderr, "bench-%s: thr: message %ld: len %zd\n", t_name, i, len);
            bench_die("thr server", "wrong message");
        }
    }
    if (t_send(c, "ok", 2, 0) < 0)
        bench_die("thr server", "send ack");
    t_close(c);
    t_listener_close(l);
    return 0;
}

static int thr_client(int port, size_t size, long count)
{
    bench_conn *c;
    const uint8_t *ack;
    uint8_t *msg = malloc(size);
    if (!msg || t_connect(port, &c) < 0)
        bench_die("thr client", "setup");
    bench_fill(msg, size, 0);
    double t0 = bench_now();
    for (long i = 0; i < count; i++) {
        uint64_t seq = (uint64_t)i;
        memcpy(msg, &seq, SEQ_LEN);
        if (t_send(c, msg, size, bench_more && i < count - 1) < 0)
            bench_die("thr client", "send");
    }
    ssize_t len = t_recv(c, &ack);
    double t = bench_now() - t0;
    if (len != 2 || memcmp(ack, "ok", 2) != 0)
        bench_die("thr client", "no acknowledgement");
    t_close(c);
    printf("transport=%s workload=thr size=%zu count=%ld more=%d msgs_per_s=%.0f "
           "mb_per_s=%.1f%s%s\n",
           t_name, size, count, bench_more, (double)count / t,
           (double)count * (double)size / t / 1e6, bench_note[0] ? " " : "", bench_note);
    free(msg);
    return 0;
}

/* ---- server: many clients echoing through one server ---- */

static int server_client(int port, pid_t server, int conns, int rounds)
{
    struct bench_echo_result r = { 0 };
    int rc = t_echo_clients(port, server, conns, rounds, &r);
    if (rc == BENCH_UNSUPPORTED)
        return rc;
    if (rc < 0) {
        fprintf(stderr, "bench-%s: server workload: clients failed\n", t_name);
        return -1;
    }
    printf("transport=%s workload=server conns=%d rounds=%d open_s=%.3f trips_per_s=%.0f "
           "rss_kib_per_conn=%.3f%s%s\n",
           t_name, conns, rounds, r.open_s, r.trips_per_s, r.rss_kib_per_conn,
           bench_note[0] ? " " : "", bench_note);
    return 0;
}

/* ---- the framed echo clients, for servers that speak sockmsg frames ---- */

#define ECHO_SIZE BENCH_ECHO_SIZE
#define FRAME (4 + ECHO_SIZE)

struct echo_client {
    int fd;
    int trips;      /* completed round trips */
    int connecting; /* conn: the first request is not sent yet */
    size_t got;     /* bytes of the reply in reply[] */
    uint8_t reply[FRAME];
};

uint64_t bench_echo_seq(int index, int trip)
{
    return (uint64_t)index << 32 | (uint32_t)trip;
}

static int echo_request(struct echo_client *e, int index)
{
    uint8_t frame[FRAME] = { 0, 0, 0, ECHO_SIZE };
    bench_fill(frame + 4, ECHO_SIZE, bench_echo_seq(index, e->trips));
    e->got = 0;
    /* 68 bytes into an empty socket buffer: one send writes all of it. */
    return send(e->fd, frame, FRAME, MSG_NOSIGNAL) == FRAME ? 0 : -1;
}

/* Reads what is there; 1 when the whole echo has arrived and is right. */
static int echo_reply(struct echo_client *e, int index)
{
    ssize_t n = recv(e->fd, e->reply + e->got, FRAME - e->got, MSG_DONTWAIT);
    if (n <= 0)
        return n < 0 && errno == EAGAIN ? 0 : -1;
    e->got += (size_t)n;
    if (e->got < FRAME)
        return 0;
    if (e->reply[3] != ECHO_SIZE ||
        bench_check(e->reply + 4, ECHO_SIZE, ECHO_SIZE, bench_echo_seq(index, e->trips), 1) < 0)
        return -1;
    e->trips++;
    return 1;
}

static int echo_connect(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Every client has one request in flight until each has done `rounds`
 * more round trips; returns the seconds it took, or -1. */
static double echo_rounds(struct echo_client *cl, int conns, int ep, int rounds)
{
    struct epoll_event ev[256];
    int target = cl[0].trips + rounds, busy = conns;
    double t0 = bench_now();
    for (int i = 0; i < conns; i++)
        if (echo_request(&cl[i], i) < 0)
            return -1;
    while (busy > 0) {
        if (bench_now() - t0 > RUN_LIMIT_S)
            return -1;
        int n = epoll_wait(ep, ev, 256, 1000);
        for (int k = 0; k < n; k++) {
            int i = (int)ev[k].data.u32;
            int rc = echo_reply(&cl[i], i);
            if (rc < 0)
                return -1;
            if (rc == 1 && cl[i].trips < target && echo_request(&cl[i], i) < 0)
                return -1;
            if (rc == 1 && cl[i].trips == target)
                busy--;
        }
    }
    return bench_now() - t0;
}

int bench_framed_clients(int port, pid_t server, int conns, int rounds, struct bench_echo_result *r)
{
    struct echo_client *cl = calloc((size_t)conns, sizeof *cl);
    int ep = epoll_create1(EPOLL_CLOEXEC), rc = -1, opened = 0;
    long rss_before = bench_rss_kib(server);
    double t0 = bench_now();
    for (; cl && ep >= 0 && opened < conns; opened++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)opened };
        if ((cl[opened].fd = echo_connect(port)) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, cl[opened].fd, &ev) < 0) {
            fprintf(stderr, "bench-%s: connection %d: %s\n", t_name, opened, strerror(errno));
            goto out;
        }
    }
    r->open_s = bench_now() - t0;
    /* One round trip each, so the server has seen every client; then it
     * is measured with all of them idle. */
    if (echo_rounds(cl, conns, ep, 1) < 0)
        goto out;
    usleep(200000);
    r->rss_kib_per_conn = (double)(bench_rss_kib(server) - rss_before) / conns;
    double t = echo_rounds(cl, conns, ep, rounds);
    if (t > 0) {
        r->trips_per_s = (double)conns * rounds / t;
        rc = 0;
    }
out:
    for (int i = 0; i < opened; i++)
        close(cl[i].fd);
    if (ep >= 0)
        close(ep);
    free(cl);
    return rc;
}

/* ---- conn: many connections opened at once, one echo each ---- */

static int conn_client(int port, int conns, int echoes, int raw)
{
    struct bench_conn_result r = { 0 };
    int rc = t_conn_clients(port, conns, echoes, raw, &r);
    if (rc == BENCH_UNSUPPORTED)
        return rc;
    if (rc < 0) {
        fprintf(stderr, "bench-%s: conn workload: clients failed\n", t_name);
        return -1;
    }
    printf("transport=%s workload=conn client=%s conns=%d echoes=%d open_ms=%.2f total_ms=%.2f\n",
           t_name, raw ? "raw" : t_name, conns, echoes, r.open_ms, r.total_ms);
    return 0;
}

/* The hand-written client: every socket non-blocking from socket() on, its
 * connect started, and registered for EPOLLOUT; when writable, the request
 * goes (send() reports a failed connect, so no getsockopt(SO_ERROR)) and
 * the socket is switched to EPOLLIN.  No TCP_NODELAY: a request waits for
 * its reply, so Nagle never holds one back. */
int bench_raw_conn_clients(int port, int conns, int echoes, struct bench_conn_result *r)
{
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct echo_client *cl = calloc((size_t)conns, sizeof *cl);
    struct epoll_event ev[256];
    int ep = epoll_create1(EPOLL_CLOEXEC), opened = 0, done = 0, rc = -1;
    double t0 = bench_now(), deadline = t0 + BENCH_CONN_LIMIT_S;
    for (; cl && ep >= 0 && opened < conns && bench_now() < deadline; opened++) {
        struct echo_client *e = &cl[opened];
        struct epoll_event out = { .events = EPOLLOUT, .data.u32 = (uint32_t)opened };
        e->connecting = 1;
        e->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (e->fd < 0 ||
            (connect(e->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) ||
            epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &out) < 0) {
            fprintf(stderr, "bench-%s: raw connection %d: %s\n", t_name, opened, strerror(errno));
            if (e->fd >= 0)
                close(e->fd);
            goto out;
        }
    }
    if (opened < conns) {
        fprintf(stderr, "bench-%s: raw clients: %d of %d connects started\n", t_name, opened,
                conns);
        goto out;
    }
    r->open_ms = (bench_now() - t0) * 1e3;
    while (done < conns) {
        if (bench_now() > deadline) {
            fprintf(stderr, "bench-%s: raw clients: %d of %d done after %d s\n", t_name, done,
                    conns, BENCH_CONN_LIMIT_S);
            goto out;
        }
        int n = epoll_wait(ep, ev, 256, 1000);
        if (n < 0 && errno != EINTR) {
            perror("bench: epoll_wait");
            goto out;
        }
        for (int k = 0; k < n; k++) {
            int i = (int)ev[k].data.u32;
            struct echo_client *e = &cl[i];
            if (e->connecting) {
                struct epoll_event in = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
                e->connecting = 0;
                if (echo_request(e, i) < 0 || epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &in) < 0) {
                    fprintf(stderr, "bench-%s: raw client %d: %s\n", t_name, i, strerror(errno));
                    goto out;
                }
                continue;
            }
            int got = echo_reply(e, i);
            if (got < 0 || (got == 1 && e->trips < echoes && echo_request(e, i) < 0)) {
                fprintf(stderr, "bench-%s: raw client %d: no right echo\n", t_name, i);
                goto out;
            }
            if (got == 1 && e->trips == echoes)
                done++;
        }
    }
    r->total_ms = (bench_now() - t0) * 1e3;
    rc = 0;
out:
    for (int i = 0; i < opened; i++)
        close(cl[i].fd);
    if (ep >= 0)
        close(ep);
    free(cl);
    return rc;
}

/* ---- hs: connections opened one after another, one echo each ---- */

int bench_hs_clients(int port, int count, int echoes, struct bench_hs_result *r)
{
    int warm = count < 10 ? count : 10, rc = -1;
    double *each = malloc((size_t)count * sizeof *each), t0 = 0;
    uint8_t msg[BENCH_ECHO_SIZE];
    for (int i = 0; each && i < warm + count; i++) {
        if (i == warm)
            t0 = bench_now();
        if (i > warm && bench_now() - t0 > RUN_LIMIT_S) {
            fprintf(stderr, "bench-%s: hs: only %d connections in %d s\n", t_name, i - warm,
                    RUN_LIMIT_S);
            goto out;
        }
        double start = bench_now();
        bench_conn *c;
        if (t_connect(port, &c) < 0) {
            fprintf(stderr, "bench-%s: hs: connection %d failed\n", t_name, i);
            goto out;
        }
        for (int k = 0; k < echoes; k++) {
            const uint8_t *echo = NULL;
            uint64_t seq = bench_echo_seq(i, k);
            bench_fill(msg, sizeof msg, seq);
            ssize_t len = t_send(c, msg, sizeof msg, 0) < 0 ? -1 : t_recv(c, &echo);
            if (bench_check(echo, len, sizeof msg, seq, 1) < 0) {
                fprintf(stderr, "bench-%s: hs: connection %d: no right echo\n", t_name, i);
                t_close(c);
                goto out;
            }
        }
        t_close(c);
        if (i >= warm)
            each[i - warm] = (bench_now() - start) * 1e3;
    }
    if (!each)
        goto out;
    r->conns_per_s = count / (bench_now() - t0);
    qsort(each, (size_t)count, sizeof *each, compare_double);
    r->p50_ms = each[count / 2];
    r->p99_ms = each[count * 99 / 100];
    rc = 0;
out:
    free(each);
    return rc;
}

static int hs_client(int port, int count, int echoes, int raw)
{
    struct bench_hs_result r = { 0 };
    int rc = t_hs_clients(port, count, echoes, raw, &r);
    if (rc == BENCH_UNSUPPORTED)
        return rc;
    if (rc < 0) {
        fprintf(stderr, "bench-%s: hs workload: the client failed\n", t_name);
        return -1;
    }
    printf("transport=%s workload=hs client=%s count=%d echoes=%d conns_per_s=%.1f p50_ms=%.3f "
           "p99_ms=%.3f%s%s\n",
           t_name, raw ? "raw" : t_name, count, echoes, r.conns_per_s, r.p50_ms, r.p99_ms,
           bench_note[0] ? " " : "", bench_note);
    return 0;
}

/* Raises the soft limit on descriptors to need if it is below; -1 when
 * the hard limit does not allow it. */
static int fd_limit(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)need) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)need) {
            fprintf(stderr, "bench-%s: %ld descriptors needed, the hard limit is %ld\n", t_name,
                    need, (long)rl.rlim_max);
            return -1;
        }
        rl.rlim_cur = (rlim_t)need;
        return setrlimit(RLIMIT_NOFILE, &rl);
    }
    return 0;
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench-%s lat SIZE COUNT | thr SIZE COUNT [more] | server CONNS ROUNDS |\n"
            "       conn CONNS ECHOES [raw] | links CONNS ROUNDS dialled|accepted |\n"
            "       reconnect PAUSE_MS TIMES | hs COUNT ECHOES [raw]\n",
            t_name);
    exit(2);
}

pid_t bench_spawn(int (*serve)(long, long), long a, long b, int *ready)
{
    int fds[2];
    if (pipe(fds) < 0)
        bench_die("pipe", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork", strerror(errno));
    if (pid == 0) {
        /* Nothing of the parent's (its server, its links) stays open in
         * the child: the pipe's end becomes descriptor 3, the rest go. */
        close(fds[0]);
        if (fds[1] != 3 && (dup2(fds[1], 3) < 0 || close(fds[1]) < 0))
            _exit(1);
        ready_pipe = 3;
        close_range(4, ~0u, 0);
        _exit(serve(a, b) == 0 ? 0 : 1);
    }
    close(fds[1]);
    *ready = fds[0];
    return pid;
}

int bench_wait_ready(int ready, double timeout_s, struct bench_ready_msg *m)
{
    struct pollfd p = { .fd = ready, .events = POLLIN };
    double until = bench_now() + timeout_s;
    ssize_t n = -1;
    for (;;) {
        double left = until - bench_now();
        int rc = left > 0 ? poll(&p, 1, (int)(left * 1e3) + 1) : 0;
        if (rc > 0)
            n = read(ready, m, sizeof *m);
        if (rc >= 0 || errno != EINTR)
            break;
    }
    close(ready);
    return n == sizeof *m ? 0 : -1;
}

/* Starts the server side in a child; returns its pid and port. */
static pid_t start_server(int (*serve)(long, long), long a, long b, int *port)
{
    int ready;
    struct bench_ready_msg m;
    pid_t pid = bench_spawn(serve, a, b, &ready);
    if (bench_wait_ready(ready, 60, &m) < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        bench_die("server", "did not start");
    }
    *port = m.port;
    return pid;
}

static int serve_lat(long size, long total)
{
    return lat_server((size_t)size, total);
}
static int serve_thr(long size, long count)
{
    return thr_server((size_t)size, count);
}
static int serve_echo(long a, long b)
{
    (void)a;
    (void)b;
    return t_echo_server();
}

/* 0 when the child ended well: by itself with 0, or by our signal sig
 * (SIGTERM when terminated says we sent it). */
static int reap_sig(pid_t pid, int sig)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status) == 0 ? 0 : -1;
    return sig && WIFSIGNALED(status) && WTERMSIG(status) == sig ? 0 : -1;
}

static int reap(pid_t pid, int terminated)
{
    return reap_sig(pid, terminated ? SIGTERM : 0);
}

int bench_end(pid_t pid, int sig)
{
    if (kill(pid, sig) < 0)
        return -1;
    return reap_sig(pid, sig);
}

/* ---- links: echo over dialled or accepted links of one sm_server ---- */

static int links_run(int conns, int rounds, int dialled)
{
    struct bench_links_result r = { 0 };
    int rc = t_links(conns, rounds, dialled, &r);
    if (rc == BENCH_UNSUPPORTED)
        return rc;
    if (rc < 0) {
        fprintf(stderr, "bench-%s: links workload (%s) failed\n", t_name,
                dialled ? "dialled" : "accepted");
        return -1;
    }
    printf("transport=%s workload=links side=%s conns=%d rounds=%d open_ms=%.2f "
           "trips_per_s=%.0f\n",
           t_name, dialled ? "dialled" : "accepted", conns, rounds, r.open_ms, r.trips_per_s);
    return 0;
}

/* ---- reconnect: a dialled link's echo server killed and restarted ---- */

static double median_of(const double *v, int n)
{
    double *c = malloc((size_t)n * sizeof *c), m;
    if (!c)
        bench_die("median", "out of memory");
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, compare_double);
    m = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
    free(c);
    return m;
}

static void print_list(const char *key, const double *v, int n)
{
    printf(" %s=", key);
    for (int i = 0; i < n; i++)
        printf("%s%.3f", i ? "," : "", v[i]);
}

static int reconnect_run(int pause_ms, int times)
{
    double *v = calloc((size_t)times * 4, sizeof *v);
    if (!v)
        bench_die("reconnect", "out of memory");
    struct bench_reconnect_result r = { v, v + times, v + 2 * times };
    double *over = v + 3 * times, over_max = -1e9;
    int rc = t_reconnect(pause_ms, times, &r);
    if (rc == 0) {
        for (int i = 0; i < times; i++) {
            over[i] = r.reconnect_ms[i] - r.wait_ms[i];
            over_max = over[i] > over_max ? over[i] : over_max;
        }
        /* The medians, then every restart's figures, in order. */
        printf("transport=%s workload=reconnect pause_ms=%d times=%d reconnect_ms=%.3f "
               "wait_ms=%.1f over_ms=%.3f over_max_ms=%.3f late_ms=%.3f",
               t_name, pause_ms, times, median_of(r.reconnect_ms, times),
               median_of(r.wait_ms, times), median_of(over, times), over_max,
               median_of(r.late_ms, times));
        print_list("reconnect_all", r.reconnect_ms, times);
        print_list("wait_all", r.wait_ms, times);
        print_list("late_all", r.late_ms, times);
        printf("\n");
    } else if (rc != BENCH_UNSUPPORTED) {
        fprintf(stderr, "bench-%s: reconnect workload failed\n", t_name);
    }
    free(v);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        usage();
    const char *workload = argv[1];
    long a = atol(argv[2]), b = atol(argv[3]);
    bench_more = argc > 4 && strcmp(argv[4], "more") == 0;
    int raw = argc > 4 && strcmp(argv[4], "raw") == 0;
    signal(SIGPIPE, SIG_IGN);
    /* As many descriptors as allowed (ZeroMQ's clients take two each); the
     * conn workload checks below that its client and server have enough. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int port, rc, terminated = 0;
    pid_t pid;
    /* These two start and end their children themselves. */
    int links = strcmp(workload, "links") == 0 && a > 0 && a <= 100000 && b > 0 && argc > 4 &&
                (strcmp(argv[4], "dialled") == 0 || strcmp(argv[4], "accepted") == 0);
    int reconnect = strcmp(workload, "reconnect") == 0 && a > 0 && a <= 60000 && b > 0 && b <= 1000;
    if (links || reconnect) {
        if (links && fd_limit(a + 64) < 0)
            bench_die("links", "too few file descriptors");
        rc = links ? links_run((int)a, (int)b, strcmp(argv[4], "dialled") == 0)
                   : reconnect_run((int)a, (int)b);
        if (rc == BENCH_UNSUPPORTED)
            printf("transport=%s workload=%s unsupported=1\n", t_name, workload);
        return rc == 0 || rc == BENCH_UNSUPPORTED ? rc : 1;
    }
    if (strcmp(workload, "lat") == 0 && a >= SEQ_LEN && b > 0) {
        long warm = b < 1000 ? b : 1000;
        pid = start_server(serve_lat, a, warm + b, &port);
        rc = lat_client(port, (size_t)a, warm, b);
    } else if (strcmp(workload, "thr") == 0 && a >= SEQ_LEN && b > 0) {
        pid = start_server(serve_thr, a, b, &port);
        rc = thr_client(port, (size_t)a, b);
    } else if (strcmp(workload, "server") == 0 && a > 0 && b > 0) {
        pid = start_server(serve_echo, 0, 0, &port);
        rc = server_client(port, pid, (int)a, (int)b);
        kill(pid, SIGTERM);
        terminated = 1;
    } else if (strcmp(workload, "conn") == 0 && a > 0 && a <= 1000000 && b > 0) {
        /* The server child inherits the limit: a descriptor per client too. */
        if (fd_limit(a + 64) < 0)
            bench_die("conn", "too few file descriptors");
        pid = start_server(serve_echo, 0, 0, &port);
        /* Port 0: the transport has no echo server. */
        rc = port > 0 ? conn_client(port, (int)a, (int)b, raw) : BENCH_UNSUPPORTED;
        kill(pid, SIGTERM);
        terminated = 1;
    } else if (strcmp(workload, "hs") == 0 && a > 0 && a <= 1000000 && b >= 0 && b <= 1000) {
        pid = start_server(serve_echo, 0, 0, &port);
        rc = port > 0 ? hs_client(port, (int)a, (int)b, raw) : BENCH_UNSUPPORTED;
        kill(pid, SIGTERM);
        terminated = 1;
    } else {
        usage();
        return 2;
    }
    if (rc == BENCH_UNSUPPORTED) {
        kill(pid, SIGTERM);
        reap(pid, 1);
        printf("transport=%s workload=%s unsupported=1\n", t_name, workload);
        return BENCH_UNSUPPORTED;
    }
    if (reap(pid, terminated) < 0) {
        fprintf(stderr, "bench-%s: %s: the server side failed\n", t_name, workload);
        return 1;
    }
    return rc == 0 ? 0 : 1;
}
