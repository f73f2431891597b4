/*
 * What the tests share: the files of tests/support, linked into every test
 * binary, the ThreadSanitizer runner's too.  One header, in sections by file:
 *
 *   clock.c   the monotonic clock and sleeping
 *   net.c     raw sockets: plain POSIX, so the bytes on the wire are
 *             exactly what a test says; whole frames over them
 *   frame.c   frame headers, byte patterns, seeded garbage and its verdict
 *   proc.c    child processes (tracked and ended by PID), lines over their
 *             pipes, their memory, descriptors and CPU time
 *   program.c the project's programs as processes with a stdin: started
 *             (under valgrind on request), stopped, exits checked
 *   client.c  the blocking API: listener/connection pairs, text clients
 *   server.c  the event-driven test server: handlers, a command language,
 *             a log of opens and closes
 *
 * Helpers that fail a test (cr_assert) run only on a test's own thread.
 * Those marked "non-asserting" report instead (-errno, an SM_E* code, -1),
 * so helper threads and forked children may call them.  Every wait is
 * bounded: by a timeout argument, or else by WAIT_MS.
 */
#ifndef SM_TEST_SUPPORT_H
#define SM_TEST_SUPPORT_H

#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/types.h>

#define WAIT_MS 5000 /* bound on every blocking call that should succeed */
#define MiB (1024L * 1024L)

/* Sanitizers change what memory figures mean (ASan keeps freed blocks in
 * quarantine), so bounds on RSS depend on the build. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#if UNDER_ASAN || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

/* For non-asserting helpers that explain a failure in fail[cap]. */
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(fail, cap, __VA_ARGS__);                                                          \
        return;                                                                                    \
    } while (0)

/* ---- clock.c ---- */

int64_t now_ms(void);
double now_ms_f(void); /* with the fraction: for latencies */
void sleep_ms(int ms); /* the whole time, even if signals interrupt it */

/* ---- net.c (non-asserting unless said) ---- */

/* Connects to "a.b.c.d:port", "[v6]:port" or "unix:/path" (TCP without
 * Nagle, so each write goes out as written): the fd, or -errno. */
int raw_connect(const char *addr);
int raw_client(const char *addr);                /* raw_connect, asserting */
int raw_listener(char addr[SM_ADDRSTRLEN]);      /* on 127.0.0.1 port 0, asserting */
int raw_accept(int lfd);                         /* within WAIT_MS, asserting */
void set_io_timeout(int fd, int ms);             /* bounds blocking send/recv */
void reset_close(int fd);                        /* close() that sends a reset */
int write_all(int fd, const void *p, size_t n);  /* 0 or -errno; no SIGPIPE */
void raw_write(int fd, const void *p, size_t n); /* within WAIT_MS, asserting */
/* Offers up to n bytes for at most ms without blocking: how many the
 * kernel took.  A failure (the peer went) ends it; *err says which (or 0). */
size_t offer(int fd, const void *p, size_t n, int ms, int *err);
/* Reads exactly n bytes by the deadline: 0, SM_ECLOSED (end of stream
 * before the first byte), SM_ETRUNCATED (after some), SM_ETIMEDOUT, -errno. */
int read_exact(int fd, void *buf, size_t n, int64_t deadline);
int raw_send_frame(int fd, const void *p, size_t n); /* 0 or -errno */
/* One frame into buf: its length, SM_EMSGSIZE, or an error as read_exact's. */
ssize_t raw_recv_frame(int fd, void *buf, size_t cap, int timeout_ms);
/* Waits for the peer to close, discarding data: 0 (end of stream), -errno
 * (a reset) or SM_ETIMEDOUT. */
int raw_wait_closed(int fd, int timeout_ms);
void assert_closed_by_peer(int fd, const char *what); /* a close or a reset */
int kernel_unread(int fd);                            /* bytes the kernel holds unread */
void wait_unread(int fd, int want);                   /* until at least want, asserting */
unsigned addr_port(const char *addr);                 /* "host:port" -> port */
/* "unix:/tmp/..." unique to this process (a test) and tag. */
void unix_addr(char *buf, size_t cap, const char *tag);

/* ---- frame.c ---- */

void put32(uint8_t *p, uint32_t v); /* a frame header: big-endian */
uint32_t get32(const uint8_t *p);
uint64_t xorshift(uint64_t *x); /* the next of a seeded sequence */

/* Bytes that differ at every offset and with every seed, so a shifted,
 * truncated, zeroed or foreign buffer never matches. */
uint8_t pattern_byte(size_t i, unsigned seed);
void pattern_fill(uint8_t *p, size_t len, unsigned seed);
size_t pattern_check(const uint8_t *p, size_t len, unsigned seed); /* first bad offset, or len */
/* Blocks of len bytes to free(), never NULL (not even for 0); asserting. */
uint8_t *patterned(size_t len, unsigned seed); /* pattern_fill'ed */
uint8_t *filled(size_t len, int byte);         /* memset */

/* A message naming client and round, with a tail whose length and bytes
 * depend on both: at most PAYLOAD_MAX bytes. */
#define PAYLOAD_MAX 800
size_t make_payload(uint8_t *buf, int client, int round);

/* Seeded garbage: an even seed gives noise, an odd one a stream of frames
 * of random length cut at a random point; the shape says how long (and
 * must fit in cap: asserted). */
struct garbage_shape {
    size_t min_len, len_spread;      /* the stream: min_len + random % len_spread */
    uint32_t frame_spread;           /* a frame: random % frame_spread bytes... */
    unsigned rare_every;             /* ...but one in rare_every is */
    uint32_t rare_base, rare_spread; /* rare_base + random % rare_spread */
    uint32_t max_frame;              /* the receiver's limit */
    unsigned forced_every; /* seeds divisible by it: one header over max_frame past half way */
    int letters;           /* payloads of letters only (never a '#' command) */
};
size_t make_garbage(uint8_t *buf, size_t cap, unsigned seed, const struct garbage_shape *g);
/* What a receiver with max_frame must report for this stream (SM_ETOOBIG,
 * SM_ETRUNCATED or SM_ECLOSED), the whole messages before that, and where
 * the last of them ends (whole may be NULL). */
int garbage_verdict(const uint8_t *p, size_t n, uint32_t max_frame, int *messages, size_t *whole);

/* ---- proc.c ---- */

struct child {
    pid_t pid;
    int out; /* read end of its stdout */
    int err; /* read end of its stderr, or -1 */
};

/* Our environment with name=value in place of name's entry (value NULL:
 * without it).  Free with free(); slot holds the new entry. */
char **env_with(const char *name, const char *value, char *slot, size_t cap);
/* Starts argv[0] (searched in PATH) with stdin from /dev/null, stdout (and
 * with want_err, stderr) to pipes, env (NULL: ours) and, if nofile > 0,
 * that RLIMIT_NOFILE.  Tracked until reaped; asserting. */
struct child spawn_child(const char *const argv[], char *const env[], long nofile, int want_err);
/* Forks child(cmd, rep), which talks over two socket pairs: *cmd to it,
 * *rep from it; its return value is its exit status.  Asserting. */
pid_t fork_child(int *cmd, int *rep, int (*child)(int cmd, int rep));
/* Waits up to timeout_ms for pid; 1 if it exited, else 0 after killing
 * it (by pid).  Either way it is reaped and no longer tracked. */
int reap(pid_t pid, int timeout_ms, int *status);
void kill_tracked_children(void); /* a suite's .fini: none outlives a test */

/* Lines over pipes and socket pairs (non-asserting). */
int read_line(int fd, char *buf, size_t cap, int timeout_ms); /* length or -1 */
void read_all(int fd, char *buf, size_t cap, int timeout_ms); /* to EOF or timeout */
int put_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3))); /* 0 or -1 */

/* Resources, from /proc.  rss_bytes and fd_count are non-asserting (-1
 * when unknown), fit for a forked child; the others assert. */
long rss_bytes(void);    /* this process's VmRSS, bytes */
long rss_of(pid_t pid);  /* VmRSS, bytes */
long hwm_of(pid_t pid);  /* VmHWM, the peak RSS, bytes */
long cpu_ms(pid_t pid);  /* user + system CPU time */
int fd_count(pid_t pid); /* open descriptors */
/* The RLIMIT_NOFILE that leaves exactly `slots` descriptor numbers free;
 * *open counts those below it already in use. */
rlim_t limit_leaving(int slots, int *open);

/* ---- program.c (asserting) ---- */

#define PROC_MS 20000 /* a program's start, output and exit: valgrind is slow */

/* One of the project's programs, running. */
struct program {
    pid_t pid;
    int in;  /* our end of its stdin (a socket pair: writes never raise
              * SIGPIPE), or -1 when it reads /dev/null */
    int out; /* its stdout */
    int err; /* its stderr */
};

extern char last_err[4096]; /* the stderr of the last program finished */

/* Starts argv[0] (a path), under valgrind memcheck when
 * SM_EXAMPLES_VALGRIND is set; tracked until finished. */
struct program program_start(const char *const argv[], int with_stdin);
/* Waits for p to end (killing it after PROC_MS) and closes our ends of its
 * pipes; its stderr goes to last_err.  Its wait status, or -1 if killed. */
int program_finish(struct program *p);
void expect_exit(struct program *p, int code, const char *what);
void stop_with(struct program *p, int sig, const char *what); /* must exit 0 */
/* Reads the "listening on ADDR" line p prints first: ADDR must be want
 * (unless NULL) and goes to got (unless NULL). */
void expect_listening(struct program *p, const char *what, const char *want,
                      char got[SM_ADDRSTRLEN]);
void end_procs(void); /* a test's .fini: no program outlives it */

/* ---- client.c (asserting) ---- */

extern const sm_options client_opts; /* every wait bounded by WAIT_MS */

/* Listens on addr with options o; *where is the bound address. */
void start_listener(const char *addr, const sm_options *o, sm_listener **l,
                    char where[SM_ADDRSTRLEN]);
/* A connected pair: *server (accepted) and *client, both with options o. */
void open_pair(const char *addr, const sm_options *o, sm_listener **l, sm_conn **server,
               sm_conn **client);
void close_pair(sm_listener *l, sm_conn *server, sm_conn *client);
/* A listener, a raw client connected to it (the fd) and *server accepted. */
int raw_pair(const char *addr, const sm_options *o, sm_listener **l, sm_conn **server);
/* Where nobody listens: a listener on addr ("127.0.0.1:0", "[::1]:0"),
 * closed at once; *where is the address it had.  Connects are refused. */
void closed_addr(const char *addr, char where[SM_ADDRSTRLEN]);

sm_conn *client_to(const char *addr); /* with client_opts */
void send_text(sm_conn *c, const char *text);
void recv_text(sm_conn *c, char *buf, size_t cap);
void expect_text(sm_conn *c, const char *want);
void ask(sm_conn *c, const char *req, char *out, size_t cap); /* send, then receive */
void set_recv_timeout(sm_conn *c, int ms);
void expect_silence(sm_conn *c, int ms); /* nothing arrives within ms */
void expect_eof(sm_conn *c);             /* the peer closed between frames */
void local_addr_of(sm_conn *c, char *buf, size_t cap);

/* The three calls that receive a message (values: 0, 1, 2). */
enum recv_call { BY_RECV, BY_ALLOC, BY_VIEW };
extern const char *const recv_call_name[]; /* "sm_recv", "sm_recv_alloc", "sm_recv_view" */
/* One message by that call: its length or the call's error.  The payload
 * goes to out (cap bytes; sm_recv fails with SM_EMSGSIZE beyond, the
 * others copy nothing then).  Asserts that a failed call left *msg NULL. */
ssize_t recv_by(sm_conn *c, enum recv_call call, void *out, size_t cap);

/* A test body, run over TCP, Unix sockets and TLS: with both directions
 * full, a frame held by SM_MORE, and a peer that reads only once its own
 * sends are through, every receive on c still reads.  (One that waited
 * for the held frame to go out first would wait for ever.)  Sets the
 * options of both connections. */
void held_frames_never_block_receiving(sm_conn *c, sm_conn *peer);
/* Sends a pattern_fill'ed message of len bytes (seed) from a thread (a
 * large one blocks until read) and receives it on `to`: with sm_recv into
 * exactly len bytes (alloc 0) or with sm_recv_alloc (1).  Checks the
 * send, the length and every byte; what names the case in failures. */
void trip(sm_conn *from, sm_conn *to, size_t len, int alloc, unsigned seed, const char *what);

/* ---- server.c ---- */

#define LOG_MAX 4096 /* opens and closes kept in the log */

enum {
    ECHO = 1,       /* echo every message that is not a command */
    TRACK = 2,      /* per-connection info through sm_server_set_data */
    GONE_NOTICE = 4 /* on_close broadcasts "gone <id>" */
};

struct close_ev {
    sm_conn_id id;
    int reason;
    int64_t at_ms;
};

/* What the "#fill SIZE MAXQ" command found. */
struct fill_result {
    int done, k, full_rc, filler_rc, after_rc;
    size_t filler_len;
};

/* The test server.  Handlers run on its thread and report through the
 * log under lock; only the test's own thread asserts. */
struct srv {
    sm_server *s;
    int flags;
    char addr[SM_ADDRSTRLEN];
    pthread_t thread;
    int started;
    atomic_int done;
    atomic_int rc;
    atomic_uint_fast64_t messages;
    atomic_uint_fast64_t efull; /* echoes refused with SM_EFULL */
    pthread_mutex_t lock;       /* guards everything below */
    size_t n_open, n_close;
    sm_conn_id opens[LOG_MAX];
    int64_t open_at[LOG_MAX];
    struct close_ev closes[LOG_MAX];
    int disconnect_rc, disconnects;
    struct fill_result fill;
    char problem[256]; /* the first thing a handler found wrong */
};

/* Non-asserting, for forked children too. */
int srv_open(struct srv **out, const sm_server_options *opt, int flags); /* on 127.0.0.1:0 */
/* Listening on addr instead ("unix:/path", "[::1]:0", ...). */
int srv_open_at(struct srv **out, const char *addr, const sm_server_options *opt, int flags);
int srv_start(struct srv *v);                /* sm_server_run on a thread */
int srv_join(struct srv *v, int timeout_ms); /* its rc, or 1: still running */
int srv_halt(struct srv *v, int timeout_ms); /* sm_server_stop, then srv_join */
void srv_destroy(struct srv *v);
size_t srv_count(struct srv *v, int closes); /* opens (0) or closes (1) so far */
int wait_count(struct srv *v, int closes, size_t n, int timeout_ms);
sm_conn_id srv_open_id(struct srv *v, size_t i, int64_t *at); /* the i-th open */
int srv_closed(struct srv *v, sm_conn_id id, struct close_ev *out);
int wait_closed(struct srv *v, sm_conn_id id, int timeout_ms, struct close_ev *out);

/* Asserting. */
struct srv *server_new_only(const sm_server_options *opt, int flags);
struct srv *server_new_at(const char *addr, const sm_server_options *opt, int flags);
void server_start(struct srv *v);
struct srv *server_up(const sm_server_options *opt, int flags);
struct srv *server_up_at(const char *addr, const sm_server_options *opt, int flags);
void server_check(struct srv *v); /* no handler saw a problem */
void server_halt(struct srv *v);
void server_down(struct srv *v);

/* Clients of the command language. */
void ping(sm_conn *c);
sm_conn_id ask_id(sm_conn *c);
struct stats_reply {
    size_t conns;
    uint64_t accepted, rejected, pauses;
};
struct stats_reply ask_stats(sm_conn *c);

/* A server with one well-behaved client, for tests where another goes bad. */
struct pair {
    struct srv *v;
    sm_conn *good;
    sm_conn_id good_id;
};
void pair_up(struct pair *p, const sm_server_options *o, int flags);
int pair_raw(struct pair *p, sm_conn_id *id); /* a raw client and its id */
void expect_reason(struct pair *p, sm_conn_id id, int want);
void good_still_served(struct pair *p);
void pair_down(struct pair *p);

/* An on_message for bare servers: sends every message back. */
void echo_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg);

/* A bare server's loop on a thread of its own (no log). */
struct idle_srv {
    sm_server *s;
    atomic_int opens;
    atomic_int done;
};
void *idle_run(void *arg);
/* Sets x up for s and starts idle_run on *t; asserting. */
void idle_start(struct idle_srv *x, sm_server *s, pthread_t *t);

#endif
