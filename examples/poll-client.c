/*
 * poll-client - one poll() loop that holds an echo server, connections to
 * many peers and stdin at once, and never blocks on any of them: the
 * shape of a program with a loop of its own (a game, a GUI, a daemon).
 *
 *     ./poll-client LISTEN_ADDR PEER_ADDR...
 *     ./poll-client 127.0.0.1:0 127.0.0.1:7000 unix:/tmp/echo.sock
 *
 * It serves echo on LISTEN_ADDR (printing "listening on HOST:PORT" first),
 * connects to every PEER_ADDR, sends each line of stdin to every peer as
 * one message and prints each reply as "PEER: TEXT".  Like tee, it reads
 * stdin only as fast as the slowest peer takes the lines, and drops a
 * peer that cannot take a line for 5 s (one whose connect never finishes,
 * one that stopped reading).  At the end of stdin it waits up to 5 s for
 * the replies still due, then exits: 0 if all came, 1 if not or a peer
 * failed.  SIGINT or SIGTERM: exit 0 at once.
 *
 * Use numeric addresses for peers: connecting never waits, but resolving
 * a name would (see sm_connect_opts).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PEERS 64
#define LINE_MAX_LEN 4096
#define WAIT_MS 5000 /* for a peer to take a line; for the last replies */

struct peer {
    const char *addr;
    sm_conn *conn;    /* NULL once it failed */
    const char *held; /* a line the connection could not take yet */
    size_t held_len;
    long long held_since;
    long due; /* replies not yet received */
};

static struct peer peers[MAX_PEERS];
static int npeers, failed;
static sm_server *server;

/* sm_server_stop is async-signal-safe, and it wakes the loop: the server's
 * descriptor turns readable and sm_server_run_once says SM_ESTOPPED. */
static void on_signal(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

/* The embedded server's only handler: echo (it never blocks). */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

static void peer_fail(struct peer *p, int rc)
{
    fprintf(stderr, "poll-client: %s: %s\n", p->addr, sm_strerror(rc));
    sm_close(p->conn);
    p->conn = NULL;
    p->held = NULL;
    failed = 1;
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Offers p the line it holds.  A non-blocking send never waits: it writes
 * what the socket takes and keeps the rest inside the connection (up to
 * SM_SEND_BUFFER), or says SM_EAGAIN and keeps nothing: then we keep the
 * line and offer it again once the socket is writable. */
static void peer_send(struct peer *p)
{
    int rc = sm_send(p->conn, p->held, p->held_len);
    if (rc == 0) {
        p->held = NULL;
        p->due++;
    } else if (rc != SM_EAGAIN) {
        peer_fail(p, rc);
    }
}

/* Acts on what poll() saw on p's descriptor. */
static void peer_ready(struct peer *p, short revents)
{
    if (revents & (POLLOUT | POLLERR | POLLHUP)) {
        int rc = sm_flush(p->conn); /* also finishes the connect */
        if (rc < 0 && rc != SM_EAGAIN) {
            peer_fail(p, rc);
            return;
        }
        if (p->held)
            peer_send(p);
    }
    if (p->conn && (revents & (POLLIN | POLLERR | POLLHUP))) {
        /* Take every whole message there is: poll() will not tell us about
         * those already inside the connection. */
        const void *msg;
        ssize_t n;
        while ((n = sm_recv_view(p->conn, &msg)) >= 0) {
            printf("%s: ", p->addr);
            fwrite(msg, 1, (size_t)n, stdout);
            putchar('\n');
            p->due--;
        }
        fflush(stdout);
        if (n != SM_EAGAIN)
            peer_fail(p, (int)n); /* closed, or broken */
    }
}

static long replies_due(void)
{
    long due = 0;
    for (int i = 0; i < npeers; i++)
        due += peers[i].conn ? peers[i].due : 0;
    return due;
}

static int any_held(void)
{
    for (int i = 0; i < npeers; i++)
        if (peers[i].held)
            return 1;
    return 0;
}

/* Lines from stdin: in[0..in_len) holds what was read, and the lines
 * before in_next have been handed to every peer. */
static char in[LINE_MAX_LEN];
static size_t in_len, in_next;

/* Hands each whole line to every peer, until one cannot take it (then
 * stdin waits: back-pressure).  At the end of input a last line without
 * '\n' counts too, as does a line that fills the buffer. */
static void send_lines(int eof)
{
    while (in_next < in_len && !any_held()) {
        char *line = in + in_next;
        char *nl = memchr(line, '\n', in_len - in_next);
        size_t len = nl ? (size_t)(nl - line) : in_len - in_next;
        if (!nl && !eof && !(in_next == 0 && in_len == sizeof in))
            break; /* the rest of this line is still to come */
        for (int i = 0; i < npeers; i++)
            if (peers[i].conn) {
                peers[i].held = line;
                peers[i].held_len = len;
                peers[i].held_since = now_ms();
                peer_send(&peers[i]);
            }
        in_next += len + (nl ? 1 : 0);
    }
    /* A peer still holding a line points into in[]: move it only after. */
    if (!any_held()) {
        memmove(in, in + in_next, in_len - in_next);
        in_len -= in_next;
        in_next = 0;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc - 2 > MAX_PEERS) {
        fprintf(stderr, "usage: poll-client LISTEN_ADDR PEER_ADDR... (at most %d peers)\n",
                MAX_PEERS);
        return 2;
    }
    /* The server: set up as for sm_server_run, but never run that way. */
    sm_server_handlers handlers = { .on_message = on_message };
    char where[SM_ADDRSTRLEN];
    if (sm_server_new(&server, &handlers, NULL, NULL) < 0 ||
        sm_server_listen(server, argv[1]) < 0) {
        fprintf(stderr, "poll-client: %s\n", sm_last_error());
        sm_server_free(server);
        return 1;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sm_server_addr(server, 0, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout);

    /* The peers: each connect returns at once, still in progress. */
    sm_options nonblocking = { .nonblocking = 1 };
    for (int i = 2; i < argc; i++) {
        struct peer *p = &peers[npeers++];
        p->addr = argv[i];
        int rc = sm_connect_opts(&p->conn, p->addr, &nonblocking);
        if (rc < 0)
            peer_fail(p, rc);
    }

    int eof = 0, stopped = 0;
    long long end = 0; /* after the end of stdin: when we stop waiting */
    while (!stopped) {
        if (eof && ((replies_due() == 0 && !any_held()) || now_ms() >= end))
            break;

        /* What to wait for: the server's descriptor, stdin while every peer
         * has taken the last line (back-pressure), each peer's wishes. */
        struct pollfd fds[2 + MAX_PEERS];
        fds[0] = (struct pollfd){ .fd = sm_server_fd(server), .events = POLLIN };
        int take_input = !eof && !any_held() && in_len < sizeof in;
        fds[1] = (struct pollfd){ .fd = take_input ? STDIN_FILENO : -1, .events = POLLIN };
        for (int i = 0; i < npeers; i++) {
            int want = sm_conn_events(peers[i].conn); /* 0 for a failed peer */
            fds[2 + i] = (struct pollfd){
                .fd = peers[i].conn ? sm_conn_fd(peers[i].conn) : -1,
                .events = (short)((want & SM_WANT_READ ? POLLIN : 0) |
                                  (want & SM_WANT_WRITE ? POLLOUT : 0)),
            };
        }
        /* Sleep until something is ready, or the first deadline: the
         * server's own (sm_server_timeout), a held line's, the end's. */
        long long wake = eof ? end : -1;
        for (int i = 0; i < npeers; i++)
            if (peers[i].held && (wake < 0 || peers[i].held_since + WAIT_MS < wake))
                wake = peers[i].held_since + WAIT_MS;
        int timeout = sm_server_timeout(server); /* -1: none */
        if (wake >= 0 && (timeout < 0 || wake - now_ms() < timeout))
            timeout = wake > now_ms() ? (int)(wake - now_ms()) : 0;
        if (poll(fds, 2 + (nfds_t)npeers, timeout) < 0 && errno != EINTR) {
            perror("poll-client: poll");
            break;
        }

        /* The server does whatever is ready, and returns at once. */
        if (sm_server_run_once(server, 0) == SM_ESTOPPED)
            stopped = 1;
        for (int i = 0; i < npeers; i++) {
            if (peers[i].conn && fds[2 + i].revents)
                peer_ready(&peers[i], fds[2 + i].revents);
            if (peers[i].held && now_ms() - peers[i].held_since >= WAIT_MS)
                peer_fail(&peers[i], SM_ETIMEDOUT); /* took no line for too long */
        }
        if (fds[1].revents) {
            ssize_t n = read(STDIN_FILENO, in + in_len, sizeof in - in_len);
            if (n > 0)
                in_len += (size_t)n;
            else if (n == 0 || errno != EINTR)
                eof = 1;
            if (eof) /* from here on, a bounded wait for the last replies */
                end = now_ms() + WAIT_MS;
        }
        send_lines(eof);
    }

    int missing = 0;
    for (int i = 0; i < npeers; i++) {
        if (peers[i].conn && (peers[i].due > 0 || peers[i].held)) {
            fprintf(stderr, "poll-client: %s: %ld replies missing%s\n", peers[i].addr, peers[i].due,
                    peers[i].held ? ", a line unsent" : "");
            missing = 1;
        }
        sm_close(peers[i].conn);
    }
    sm_server_free(server);
    return stopped ? 0 : missing || failed ? 1 : 0;
}
