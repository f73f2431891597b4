/* The blocking API over real sockets: round trips, errors, promises. */
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* Listens on addr and connects a client to it: *l, *server_side, *client. */
static void pair(const char *addr, const sm_options *o, sm_listener **l,
                 sm_conn **server_side, sm_conn **client)
{
    char where[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen_opts(l, addr, o), 0, "listen %s: %s", addr, sm_last_error());
    cr_assert_gt(sm_listener_addr(*l, where, sizeof where), 0);
    cr_assert_eq(sm_connect_opts(client, where, o), 0, "connect %s: %s", where, sm_last_error());
    cr_assert_eq(sm_accept(*l, server_side), 0, "accept: %s", sm_last_error());
}

static void unpair(sm_listener *l, sm_conn *a, sm_conn *b)
{
    sm_close(a);
    sm_close(b);
    sm_listener_close(l);
}

static void unix_addr(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "unix:/tmp/sockmsg-test-%d-%s.sock", (int)getpid(), tag);
}

static void pattern(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 31 + seed + (i >> 8));
}

struct sender {
    sm_conn *c;
    const uint8_t *msg;
    size_t len;
    int rc;
};

static void *send_thread(void *arg)
{
    struct sender *s = arg;
    s->rc = sm_send(s->c, s->msg, s->len);
    return NULL;
}

/* Sends len bytes from a thread (large frames block until read) and
 * receives them both with sm_recv and sm_recv_alloc. */
static void round_trip(sm_conn *from, sm_conn *to, size_t len)
{
    uint8_t *msg = malloc(len + 1), *got = malloc(len + 1);
    pattern(msg, len, (unsigned)len);
    for (int mode = 0; mode < 2; mode++) {
        struct sender s = { from, msg, len, -1 };
        pthread_t t;
        pthread_create(&t, NULL, send_thread, &s);
        ssize_t n;
        void *alloc = NULL;
        if (mode == 0) {
            n = sm_recv(to, got, len + 1);
        } else {
            n = sm_recv_alloc(to, &alloc);
            if (n >= 0)
                memcpy(got, alloc, (size_t)n);
            free(alloc);
        }
        pthread_join(t, NULL);
        cr_assert_eq(s.rc, 0, "send %zu: %s", len, sm_strerror(s.rc));
        cr_assert_eq(n, (ssize_t)len, "recv %zu (mode %d): %zd %s", len, mode, n, sm_last_error());
        cr_assert(memcmp(msg, got, len) == 0, "content of %zu bytes", len);
    }
    free(msg);
    free(got);
}

static const size_t sizes[] = { 0, 1, 4095, 4096, 65536, 1 << 20, SM_DEFAULT_MAX_FRAME };

static void round_trips_over(const char *addr)
{
    sm_listener *l;
    sm_conn *a, *b;
    pair(addr, NULL, &l, &a, &b);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        round_trip(b, a, sizes[i]);
        round_trip(a, b, sizes[i]);
    }
    unpair(l, a, b);
}

Test(conn, round_trips_ipv4, .timeout = 60) { round_trips_over("127.0.0.1:0"); }
Test(conn, round_trips_ipv6, .timeout = 60) { round_trips_over("[::1]:0"); }
Test(conn, round_trips_unix, .timeout = 60)
{
    char addr[128];
    unix_addr(addr, sizeof addr, "rt");
    round_trips_over(addr);
}

Test(conn, dual_stack_listener_takes_ipv4_and_ipv6, .timeout = 10)
{
    sm_listener *l;
    sm_conn *c, *s;
    char where[SM_ADDRSTRLEN], to[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen(&l, ":0"), 0);
    sm_listener_addr(l, where, sizeof where);
    const char *port = strrchr(where, ':') + 1;
    const char *hosts[] = { "127.0.0.1", "[::1]", "localhost" };
    for (int i = 0; i < 3; i++) {
        snprintf(to, sizeof to, "%s:%s", hosts[i], port);
        cr_assert_eq(sm_connect(&c, to), 0, "%s: %s", to, sm_last_error());
        cr_assert_eq(sm_accept(l, &s), 0);
        cr_assert_eq(sm_send(c, "x", 1), 0);
        char b[4];
        cr_assert_eq(sm_recv(s, b, sizeof b), 1);
        sm_close(c);
        sm_close(s);
    }
    sm_listener_close(l);
}

Test(conn, back_to_back_messages_stay_separate, .timeout = 10)
{
    sm_listener *l;
    sm_conn *a, *b;
    pair("127.0.0.1:0", NULL, &l, &a, &b);
    char msg[64], got[64];
    for (int i = 0; i < 50; i++) {
        int n = snprintf(msg, sizeof msg, "message %d", i);
        cr_assert_eq(sm_send(b, msg, (size_t)(i % 7 == 0 ? 0 : n)), 0);
    }
    for (int i = 0; i < 50; i++) {
        int n = snprintf(msg, sizeof msg, "message %d", i);
        if (i % 7 == 0)
            n = 0;
        cr_assert_eq(sm_recv(a, got, sizeof got), n, "message %d", i);
        cr_assert(memcmp(got, msg, (size_t)n) == 0);
    }
    unpair(l, a, b);
}

Test(conn, recv_ready_tells_whether_a_message_is_buffered, .timeout = 10)
{
    sm_listener *l;
    sm_conn *a, *b;
    char got[8];
    pair("127.0.0.1:0", NULL, &l, &a, &b);
    cr_assert_not(sm_recv_ready(a));
    cr_assert_eq(sm_send(b, "one", 3), 0);
    cr_assert_eq(sm_send(b, "two", 3), 0);
    usleep(100000); /* both arrive, so one read takes both */
    cr_assert_not(sm_recv_ready(a), "nothing read from the socket yet");
    cr_assert_eq(sm_recv(a, got, sizeof got), 3);
    cr_assert(sm_recv_ready(a), "the second came with the first read");
    cr_assert_eq(sm_recv(a, got, sizeof got), 3);
    cr_assert(memcmp(got, "two", 3) == 0);
    cr_assert_not(sm_recv_ready(a));
    unpair(l, a, b);
}

Test(errors, connect_refused_names_the_address, .timeout = 10)
{
    sm_listener *l;
    sm_conn *c = (sm_conn *)1;
    char where[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen(&l, "127.0.0.1:0"), 0);
    sm_listener_addr(l, where, sizeof where);
    sm_listener_close(l);
    cr_assert_eq(sm_connect(&c, where), -ECONNREFUSED);
    cr_assert_null(c);
    cr_assert(strstr(sm_last_error(), where), "'%s' names %s", sm_last_error(), where);
    cr_assert(strstr(sm_last_error(), "refused"), "%s", sm_last_error());
    cr_assert(strstr(sm_strerror(-ECONNREFUSED), "refused"));
}

Test(errors, bad_addresses_and_arguments)
{
    sm_conn *c;
    sm_listener *l;
    const char *bad[] = { "nocolon", "1.2.3.4:99999", "[::1:80", "host:", "unix:", "::1:80" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(sm_connect(&c, bad[i]), SM_EADDR, "%s", bad[i]);
        cr_assert_eq(sm_listen(&l, bad[i]), SM_EADDR, "%s", bad[i]);
    }
    cr_assert_eq(sm_connect(&c, "127.0.0.1:0"), SM_EADDR);
    cr_assert_eq(sm_connect(&c, "no-such-host.invalid:80"), SM_EADDR);
    cr_assert_eq(sm_connect(NULL, "127.0.0.1:1"), SM_EINVAL);
    cr_assert_eq(sm_connect(&c, NULL), SM_EINVAL);
    cr_assert_eq(sm_listen(NULL, ":0"), SM_EINVAL);
    cr_assert_eq(sm_accept(NULL, &c), SM_EINVAL);
    cr_assert_eq(sm_send(NULL, "x", 1), SM_EINVAL);
    cr_assert_eq(sm_recv(NULL, NULL, 0), SM_EINVAL);
    /* Too long for the 4-byte header: refused before anything is read. */
    sm_listener *l2;
    sm_conn *a, *b;
    char byte = 0;
    pair("127.0.0.1:0", NULL, &l2, &a, &b);
    cr_assert_eq(sm_send(b, &byte, (size_t)UINT32_MAX + 1), SM_ETOOBIG);
    cr_assert_eq(sm_send(b, "ok", 2), 0, "the connection is still usable");
    cr_assert_eq(sm_recv(a, &byte, 1), SM_EMSGSIZE);
    unpair(l2, a, b);
    sm_options neg = { .recv_timeout_ms = -1 };
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &neg), SM_EINVAL);
}

Test(errors, strerror_names_every_code)
{
    const int codes[] = { SM_ECLOSED, SM_ETRUNCATED, SM_ETOOBIG, SM_EMSGSIZE, SM_ETIMEDOUT,
                          SM_EADDR, SM_EINVAL, SM_ENOMEM, SM_ENOCONN, SM_ESTOPPED, SM_EFULL };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        cr_assert_gt(strlen(sm_strerror(codes[i])), 3);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(sm_strerror(codes[i]), sm_strerror(codes[j]));
    }
    cr_assert_str_eq(sm_strerror(-EPIPE), strerror(EPIPE));
}

Test(errors, timeouts_lose_nothing, .timeout = 10)
{
    sm_listener *l;
    sm_conn *a, *b, *c;
    sm_options o = { .recv_timeout_ms = 100, .accept_timeout_ms = 100 };
    pair("127.0.0.1:0", &o, &l, &a, &b);
    char buf[16];
    cr_assert_eq(sm_recv(a, buf, sizeof buf), SM_ETIMEDOUT);
    cr_assert_eq(sm_accept(l, &c), SM_ETIMEDOUT);
    /* A frame cut in two by a pause longer than the timeout. */
    int fd = sm_conn_fd(b);
    cr_assert_eq(write(fd, "\0\0\0\5he", 6), 6);
    cr_assert_eq(sm_recv(a, buf, sizeof buf), SM_ETIMEDOUT);
    cr_assert_eq(write(fd, "llo", 3), 3);
    cr_assert_eq(sm_recv(a, buf, sizeof buf), 5);
    cr_assert(memcmp(buf, "hello", 5) == 0);
    cr_assert_eq(sm_send(b, "again", 5), 0);
    cr_assert_eq(sm_recv(a, buf, sizeof buf), 5);
    unpair(l, a, b);
}

Test(errors, too_small_buffer_keeps_the_message, .timeout = 10)
{
    sm_listener *l;
    sm_conn *a, *b;
    pair("127.0.0.1:0", NULL, &l, &a, &b);
    char small[4], big[32];
    cr_assert_eq(sm_send(b, "a longer message", 16), 0);
    cr_assert_eq(sm_send(b, "next", 4), 0);
    cr_assert_eq(sm_recv(a, small, sizeof small), SM_EMSGSIZE);
    cr_assert(strstr(sm_last_error(), "16"), "%s", sm_last_error());
    cr_assert_eq(sm_recv(a, big, sizeof big), 16);
    cr_assert(memcmp(big, "a longer message", 16) == 0);
    cr_assert_eq(sm_recv(a, small, sizeof small), 4);
    unpair(l, a, b);
}

/* A raw peer writes bytes, then closes; returns the receiving side's code
 * for the first and the second sm_recv. */
static void raw_then_close(const void *bytes, size_t len, uint32_t max_frame, int want)
{
    sm_listener *l;
    sm_conn *a, *b;
    sm_options o = { .max_frame = max_frame };
    pair("127.0.0.1:0", &o, &l, &a, &b);
    cr_assert_eq(write(sm_conn_fd(b), bytes, len), (ssize_t)len);
    sm_close(b);
    void *msg;
    cr_assert_eq(sm_recv_alloc(a, &msg), want, "got %s", sm_last_error());
    cr_assert_null(msg);
    cr_assert_eq(sm_recv_alloc(a, &msg), want, "the error sticks");
    sm_close(a);
    sm_listener_close(l);
}

Test(errors, clean_close_vs_truncated, .timeout = 10)
{
    raw_then_close("", 0, 0, SM_ECLOSED);
    raw_then_close("\0\0", 2, 0, SM_ETRUNCATED);
    raw_then_close("\0\0\0\12abc", 7, 0, SM_ETRUNCATED);
}

Test(errors, oversize_headers_refused, .timeout = 10)
{
    raw_then_close("\xff\xff\xff\xff", 4, 0, SM_ETOOBIG);
    raw_then_close("\0\0\4\1", 4, 1024, SM_ETOOBIG);
    /* Exactly max_frame is fine (then truncated: the payload never came). */
    raw_then_close("\0\0\4\0", 4, 1024, SM_ETRUNCATED);
}

Test(errors, no_sigpipe_when_peer_is_gone, .timeout = 10)
{
    signal(SIGPIPE, SIG_DFL);
    sm_listener *l;
    sm_conn *a, *b;
    pair("127.0.0.1:0", NULL, &l, &a, &b);
    sm_close(a);
    char chunk[4096] = { 0 };
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++)
        rc = sm_send(b, chunk, sizeof chunk);
    cr_assert(rc == -EPIPE || rc == -ECONNRESET, "rc %d %s", rc, sm_strerror(rc));
    sm_close(b);
    sm_listener_close(l);
}

Test(conn, descriptors_are_close_on_exec, .timeout = 10)
{
    sm_listener *l;
    sm_conn *a, *b;
    pair("127.0.0.1:0", NULL, &l, &a, &b);
    cr_assert(fcntl(sm_listener_fd(l), F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(sm_conn_fd(a), F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(sm_conn_fd(b), F_GETFD) & FD_CLOEXEC);
    char peer[SM_ADDRSTRLEN];
    cr_assert_gt(sm_conn_peer(b, peer, sizeof peer), 0);
    cr_assert_str_eq(strstr(peer, "127.0.0.1:") ? "ok" : peer, "ok");
    unpair(l, a, b);
}

Test(conn, restarted_server_rebinds_at_once, .timeout = 10)
{
    sm_listener *l;
    sm_conn *a, *b;
    char where[SM_ADDRSTRLEN];
    pair("127.0.0.1:0", NULL, &l, &a, &b);
    sm_listener_addr(l, where, sizeof where);
    /* The server side closes first, so its end waits in TIME_WAIT. */
    cr_assert_eq(sm_send(a, "bye", 3), 0);
    sm_close(a);
    char buf[8];
    cr_assert_eq(sm_recv(b, buf, sizeof buf), 3);
    cr_assert_eq(sm_recv(b, buf, sizeof buf), SM_ECLOSED);
    sm_close(b);
    sm_listener_close(l);
    cr_assert_eq(sm_listen(&l, where), 0, "rebind %s: %s", where, sm_last_error());
    sm_listener_close(l);
}

Test(conn, unix_listener_replaces_stale_socket_not_live_one, .timeout = 10)
{
    char addr[128];
    unix_addr(addr, sizeof addr, "stale");
    sm_listener *l, *l2;
    cr_assert_eq(sm_listen(&l, addr), 0);
    cr_assert_eq(sm_listen(&l2, addr), -EADDRINUSE);
    /* A server that died leaves its socket file behind. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sm_listener_close(l);
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    strcpy(un.sun_path, addr + 5);
    cr_assert_eq(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
    close(fd);
    cr_assert_eq(access(addr + 5, F_OK), 0);
    cr_assert_eq(sm_listen(&l, addr), 0, "%s", sm_last_error());
    sm_listener_close(l);
    cr_assert_neq(access(addr + 5, F_OK), 0, "removed on close");
}

static void on_alarm(int sig) { (void)sig; }

struct delayed {
    sm_conn *c;
    const char *addr;
};

static void *send_later(void *arg)
{
    struct delayed *d = arg;
    usleep(300000);
    if (d->addr) {
        sm_connect(&d->c, d->addr);
    } else {
        sm_send(d->c, "late", 4);
    }
    return NULL;
}

Test(conn, interrupted_calls_are_retried, .timeout = 10)
{
    struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval every_ms = { { 0, 5000 }, { 0, 5000 } };
    sm_listener *l;
    sm_conn *a, *b, *c;
    char where[SM_ADDRSTRLEN], buf[8];
    pair("127.0.0.1:0", NULL, &l, &a, &b);
    sm_listener_addr(l, where, sizeof where);

    setitimer(ITIMER_REAL, &every_ms, NULL);
    struct delayed d = { b, NULL };
    pthread_t t;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, &old); /* the helper thread inherits this */
    pthread_create(&t, NULL, send_later, &d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    cr_assert_eq(sm_recv(a, buf, sizeof buf), 4, "%s", sm_last_error());
    pthread_join(t, NULL);

    struct delayed d2 = { NULL, where };
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_create(&t, NULL, send_later, &d2);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    cr_assert_eq(sm_accept(l, &c), 0, "%s", sm_last_error());
    pthread_join(t, NULL);
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    sm_close(c);
    sm_close(d2.c);
    unpair(l, a, b);
}
