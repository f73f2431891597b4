/*
 * The benchmark harness.  bench.c holds main() and the workloads, written
 * once; each transport (bench/transport-<name>.c) supplies the few calls
 * below, so every transport runs exactly the same loop and the same
 * content checks.
 *
 *     bench-<transport> lat SIZE COUNT          ping-pong, after a warm-up
 *     bench-<transport> thr SIZE COUNT [more]   one-way stream, then an ack
 *     bench-<transport> server CONNS ROUNDS     echo through one server
 *     bench-<transport> conn CONNS ECHOES [raw] CONNS connections opened at
 *         once (non-blocking connects) to the transport's echo server, then
 *         ECHOES round trips on each; "raw": by the hand-written epoll
 *         client instead of the transport's own
 *     bench-<transport> links CONNS ROUNDS dialled|accepted   echo over
 *         CONNS links of one sm_server that it dialled (sm_server_connect)
 *         or accepted; only sockmsg has dialled links
 *     bench-<transport> reconnect PAUSE_MS TIMES   a dialled link whose
 *         echo server is killed and, PAUSE_MS later, restarted on its port,
 *         TIMES times: from listening again to the first echo back
 *     bench-<transport> hs COUNT ECHOES [raw]   COUNT connections opened one
 *         after another to the transport's echo server, each with ECHOES
 *         round trips, then closed (over TLS, a full handshake each); "raw":
 *         sockmsg-tls's connections are the OpenSSL baseline's instead
 *
 * The server side runs in a child process, on 127.0.0.1 and a port the
 * kernel picks.  Output is one line of key=value pairs; the exit status is
 * 0 on success, 1 on a failed run or content mismatch, 3 when the
 * transport does not support the workload.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_UNSUPPORTED 3

typedef struct bench_conn bench_conn;
typedef struct bench_listener bench_listener;

/* ---- supplied by each transport; 0 (or a length) on success, <0 on error ---- */

extern const char t_name[];

/* Binds 127.0.0.1 on a free port and stores it in *port. */
int t_listen(bench_listener **l, int *port);
int t_accept(bench_listener *l, bench_conn **c);
void t_listener_close(bench_listener *l);
int t_connect(int port, bench_conn **c);
/* more != 0: further messages follow at once, so the transport may hold
 * this one back; more == 0: everything sent so far is on the wire. */
int t_send(bench_conn *c, const void *msg, size_t len, int more);
/* The next message; *msg stays valid until the next call on c. */
ssize_t t_recv(bench_conn *c, const uint8_t **msg);
void t_close(bench_conn *c);

/* The server workload: an echo server on one thread, until SIGTERM.  It
 * calls bench_ready() once it listens. */
int t_echo_server(void);
/* Drives conns clients against it; bench_framed_clients() does this for
 * any server that speaks the sockmsg wire format. */
struct bench_echo_result {
    double open_s;           /* time to open every connection */
    double trips_per_s;      /* round trips per second, all clients busy */
    double rss_kib_per_conn; /* server RSS growth per idle connection */
};
int t_echo_clients(int port, pid_t server, int conns, int rounds, struct bench_echo_result *r);

/* The conn workload's client side, against t_echo_server on port: opens
 * conns connections at once, without waiting for any, then does `echoes`
 * round trips of a BENCH_ECHO_SIZE message on each, one in flight per
 * connection; each echo is checked whole.  raw != 0 asks for the
 * hand-written client, bench_raw_conn_clients(), where the server speaks
 * sockmsg frames.  Connections are closed after the clock stops. */
struct bench_conn_result {
    double open_ms;  /* until the last connect was started */
    double total_ms; /* until the last echo arrived */
};
int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r);

/* The links workload (sockmsg only; the others return BENCH_UNSUPPORTED):
 * one sm_server (this process) keeps one BENCH_ECHO_SIZE message in flight
 * on each of conns links to an sm_server echo server (a child process),
 * sending again on each echo, for `rounds` round trips each after one
 * untimed round.  dialled != 0: the links are its own sm_server_connect
 * links to the echo server's listener; 0: it listens and accepts them, and
 * the echo server makes them (connect(), then sm_server_adopt, which
 * serves a socket as if accepted), so the echo server's side is an
 * accepted-like connection either way and only the measured side differs. */
struct bench_links_result {
    double open_ms;     /* until every link was up (on_open) */
    double trips_per_s; /* round trips per second, every link busy */
};
int t_links(int conns, int rounds, int dialled, struct bench_links_result *r);

/* The reconnect workload (sockmsg only): a link dialled by sm_server_connect
 * (default backoff) to an echo server in a child; `times` times, the child
 * is killed (SIGKILL) and, pause_ms after, a new one listens on the same
 * port; an echo queued while the link was down is timed.  Per restart i: */
struct bench_reconnect_result {
    double *reconnect_ms; /* the new listener listening -> the echo back */
    double *wait_ms;      /* on_retry's delay_ms for the wait the try that
                           * connected ended: the backoff current then */
    double *late_ms;      /* that try's scheduled time -> the echo back */
};
int t_reconnect(int pause_ms, int times, struct bench_reconnect_result *r);

/* The hs workload's client side, against t_echo_server on port: COUNT
 * connections one after another, each opened (t_connect), used for
 * `echoes` round trips of a BENCH_ECHO_SIZE message and closed before the
 * next; bench_hs_clients() does it with the transport's own calls.  raw
 * != 0 asks for the hand-written client where the transport has another
 * (sockmsg-tls: OpenSSL's); the others return BENCH_UNSUPPORTED for it. */
struct bench_hs_result {
    double conns_per_s; /* connections opened, used and closed per second */
    double p50_ms;      /* one connection, median */
    double p99_ms;
};
int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r);

/* ---- supplied by bench.c ---- */

/* Extra key=value pairs a transport may set (e.g. the TLS version and
 * cipher it negotiated); appended to the output line of lat, thr, server
 * and hs. */
extern char bench_note[256];

/* Set for the "more" variant of thr: the sender says more follow. */
extern int bench_more;

/* Tells the parent which port the server (child) listens on, and when
 * (bench_now() at the call): call it right after listening. */
void bench_ready(int port);
/* What bench_ready sends. */
struct bench_ready_msg {
    int port;
    double at;
};
/* Runs serve(a, b) in a child process with every descriptor closed but
 * stdin, stdout, stderr and the end of a pipe that bench_ready writes; the
 * read end goes to *ready.  Returns the child's pid; dies on failure. */
pid_t bench_spawn(int (*serve)(long, long), long a, long b, int *ready);
/* Reads the child's bench_ready from ready (then closes it), waiting at
 * most timeout_s; 0, or -1 when the child did not report. */
int bench_wait_ready(int ready, double timeout_s, struct bench_ready_msg *m);
/* Sends sig to the child and reaps it: 0 when it exited with 0 or was
 * ended by sig. */
int bench_end(pid_t pid, int sig);
/* Message seq of size bytes: seq in the first 8 bytes, then a fixed pattern. */
void bench_fill(uint8_t *msg, size_t size, uint64_t seq);
/* 0 when msg is message seq of size bytes; full also checks the pattern. */
int bench_check(const uint8_t *msg, ssize_t len, size_t size, uint64_t seq, int full);
double bench_now(void);
long bench_rss_kib(pid_t pid);
int bench_framed_clients(int port, pid_t server, int conns, int rounds,
                         struct bench_echo_result *r);
/* The hs workload with t_connect, t_send, t_recv and t_close; the first
 * few connections (up to 10) are not counted. */
int bench_hs_clients(int port, int count, int echoes, struct bench_hs_result *r);
/* The hand-written conn client: non-blocking connect() on every socket,
 * epoll for writability, then the echoes; see t_conn_clients(). */
int bench_raw_conn_clients(int port, int conns, int echoes, struct bench_conn_result *r);
/* The echoed messages of the server and conn workloads: BENCH_ECHO_SIZE
 * bytes, the sequence number of connection index's trip-th round trip. */
#define BENCH_ECHO_SIZE 64
uint64_t bench_echo_seq(int index, int trip);
/* No conn run may take longer than this. */
#define BENCH_CONN_LIMIT_S 60
/* Fails the process with a message; for setup errors in a transport. */
void bench_die(const char *what, const char *detail);

#endif
