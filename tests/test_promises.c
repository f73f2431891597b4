/*
 * The library's promises on every path: nothing lost, nothing stuck,
 * memory bounded.  Each test is named after the promise it holds, and
 * each failed on the code before the fix it guards (see CHANGELOG.md).
 *
 * Peers that misbehave are plain POSIX sockets (tests/support/net.c), so
 * the bytes on the wire are exactly what each test says; the event server
 * that records what its handlers saw is tests/support/server.c's.
 */
#include "support/support.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- helpers ---- */

#define READ_MS 10000 /* the bound on each read from a raw socket */

/* A Unix listener with the smallest backlog, already full: one client
 * waits in it, never accepted.  Returns the listening fd. */
static int full_unix_listener(const char *path, int *queued)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
    cr_assert_eq(listen(fd, 0), 0);
    /* Backlog 0 admits one queued client on Linux; fill until refused. */
    int n = 0;
    for (int i = 0; i < 8; i++) {
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0) {
            cr_assert_eq(errno, EAGAIN, "backlog full means EAGAIN: %s", strerror(errno));
            close(c);
            break;
        }
        queued[n++] = c;
    }
    cr_assert_gt(n, 0);
    queued[n] = -1;
    return fd;
}

static void close_all_fds(int *fds)
{
    for (int i = 0; fds[i] >= 0; i++)
        close(fds[i]);
}

/* A connected pair over a Unix socket named by tag, both with options o
 * (tests/support/client.c's open_pair). */
static void unix_pair(const char *tag, const sm_options *o, sm_listener **l, sm_conn **server,
                      sm_conn **client)
{
    char addr[SM_ADDRSTRLEN];
    unix_addr(addr, sizeof addr, tag);
    open_pair(addr, o, l, server, client);
}

/* How many closes the test server (tests/support/server.c) saw within ms
 * of waiting for the first, and the first one's reason. */
static size_t closes_within(struct srv *v, int ms, int *reason)
{
    struct close_ev ev = { 0 };
    wait_count(v, 1, 1, ms);
    srv_closed(v, srv_open_id(v, 0, NULL), &ev);
    *reason = ev.reason;
    return srv_count(v, 1);
}

/* count frames of size bytes each, in one buffer. */
static uint8_t *frames(int count, size_t size, size_t *total)
{
    *total = (size_t)count * (4 + size);
    uint8_t *buf = malloc(*total);
    cr_assert_not_null(buf);
    for (int i = 0; i < count; i++) {
        uint8_t *f = buf + (size_t)i * (4 + size);
        put32(f, (uint32_t)size);
        memset(f + 4, 'a' + i % 26, size);
    }
    return buf;
}

/* ---- 1. a hang-up never ends a connection before its data is delivered ---- */

static void burst_then_close(const char *listen_addr, size_t cut)
{
    struct srv *v = server_up_at(listen_addr, NULL, 0);
    size_t total;
    uint8_t *buf = frames(150, 1000, &total);
    int fd = raw_client(v->addr);
    raw_write(fd, buf, total - cut);
    close(fd);
    int reason;
    cr_assert_eq(closes_within(v, 5000, &reason), 1, "the server saw the close");
    uint64_t got = atomic_load(&v->messages), want = cut ? 149 : 150;
    cr_expect_eq(got, want, "%llu of %llu messages delivered", (unsigned long long)got,
                 (unsigned long long)want);
    cr_expect_eq(reason, cut ? SM_ETRUNCATED : SM_ECLOSED, "reason %d", reason);
    free(buf);
    server_down(v);
}

Test(promises, unix_burst_then_close_delivers_every_message)
{
    char addr[SM_ADDRSTRLEN];
    unix_addr(addr, sizeof addr, "burst");
    burst_then_close(addr, 0);
}

Test(promises, unix_close_inside_a_frame_is_truncated)
{
    char addr[SM_ADDRSTRLEN];
    unix_addr(addr, sizeof addr, "cut");
    burst_then_close(addr, 500);
}

Test(promises, tcp_burst_then_close_delivers_every_message)
{
    burst_then_close("127.0.0.1:0", 0);
    burst_then_close("127.0.0.1:0", 500);
}

/* ---- 2. a receive timeout never costs a byte, for any frame size ---- */

/* Receives one message with call, retrying on SM_ETIMEDOUT; counts tries. */
static ssize_t receive_retrying(sm_conn *c, enum recv_call call, uint8_t *buf, size_t cap,
                                int *tries)
{
    for (;;) {
        ++*tries;
        cr_assert_lt(*tries, 1000, "the retry loop must not spin");
        ssize_t n = recv_by(c, call, buf, cap);
        if (n != SM_ETIMEDOUT)
            return n;
    }
}

struct dribble {
    int fd;
    size_t len;
    int rc; /* the first failed write, or 0 */
};

/* Sends a frame of len bytes in three parts with pauses longer than the
 * receiver's timeout, then a small frame. */
static void *dribble_frame(void *arg)
{
    struct dribble *d = arg;
    uint8_t *f = malloc(4 + d->len);
    put32(f, (uint32_t)d->len);
    pattern_fill(f + 4, d->len, 7);
    size_t third = (4 + d->len) / 3;
    d->rc = write_all(d->fd, f, third);
    sleep_ms(150);
    if (!d->rc)
        d->rc = write_all(d->fd, f + third, third);
    sleep_ms(150);
    if (!d->rc)
        d->rc = write_all(d->fd, f + 2 * third, 4 + d->len - 2 * third);
    uint8_t tail[4 + 3];
    put32(tail, 3);
    memcpy(tail + 4, "end", 3);
    if (!d->rc)
        d->rc = write_all(d->fd, tail, sizeof tail);
    free(f);
    return NULL;
}

static void timeout_keeps_frame(enum recv_call call, size_t len)
{
    sm_options o = { .recv_timeout_ms = 40 };
    sm_listener *l;
    sm_conn *c, *server;
    unix_pair("tmo", &o, &l, &server, &c);
    struct dribble d = { dup(sm_conn_fd(server)), len, 0 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, dribble_frame, &d), 0);
    uint8_t *buf = malloc(len);
    cr_assert_not_null(buf);
    int tries = 0;
    ssize_t n = receive_retrying(c, call, buf, len, &tries);
    cr_assert_eq(n, (ssize_t)len, "got %zd: %s", n, sm_last_error());
    size_t bad = pattern_check(buf, len, 7);
    cr_assert_eq(bad, len, "byte %zu differs", bad);
    cr_expect_gt(tries, 2, "the pauses made it time out first");
    cr_expect_lt(tries, 40, "%d tries: a timeout waits, it does not spin", tries);
    n = receive_retrying(c, call, buf, len, &tries);
    cr_assert_eq(n, 3, "the next message follows intact");
    cr_assert_arr_eq(buf, "end", 3);
    pthread_join(t, NULL);
    cr_assert_eq(d.rc, 0, "write: %s", strerror(-d.rc));
    close(d.fd);
    free(buf);
    close_pair(l, server, c);
}

Test(promises, recv_timeout_never_loses_a_large_frame)
{
    timeout_keeps_frame(BY_RECV, 100000);
    timeout_keeps_frame(BY_RECV, 3000000);
}

Test(promises, recv_alloc_timeout_never_loses_a_large_frame)
{
    timeout_keeps_frame(BY_ALLOC, 100000);
}

Test(promises, recv_view_timeout_never_loses_a_large_frame)
{
    timeout_keeps_frame(BY_VIEW, 100000);
    timeout_keeps_frame(BY_VIEW, 40000);
}

/* ---- 2b. a send sends a frame whole or not at all ---- */

enum { SEND_LEN = 300000, SEND_TRIES = 40 };

struct frame_reader {
    int fd;
    const int *expected; /* the fill byte of each frame, in order */
    int count;
    int got;     /* frames read whole and correct */
    int corrupt; /* 1 if a header or payload was wrong */
    int end;     /* how the last header read ended: SM_ECLOSED at the end */
};

/* Reads frames until end of stream, checking each against expected. */
static void *read_frames(void *arg)
{
    struct frame_reader *r = arg;
    uint8_t *buf = malloc(SEND_LEN);
    uint8_t head[4];
    while (buf && (r->end = read_exact(r->fd, head, 4, now_ms() + READ_MS)) == 0) {
        if (get32(head) != SEND_LEN || r->got >= r->count ||
            read_exact(r->fd, buf, SEND_LEN, now_ms() + READ_MS) != 0) {
            r->corrupt = 1;
            break;
        }
        for (size_t i = 0; i < SEND_LEN; i++)
            if (buf[i] != (uint8_t)r->expected[r->got])
                r->corrupt = 1;
        r->got++;
    }
    free(buf);
    return NULL;
}

Test(promises, send_timeout_sends_a_frame_whole_or_not_at_all)
{
    sm_options o = { .send_timeout_ms = 30 };
    sm_listener *l;
    sm_conn *c, *server;
    unix_pair("snd", &o, &l, &server, &c);
    /* Each frame is filled with its number; the peer reads nothing until
     * the sends are done, so some time out, some part-way through. */
    uint8_t *msg = malloc(SEND_LEN);
    int sent[SEND_TRIES], nsent = 0, timeouts = 0;
    for (int i = 0; i < SEND_TRIES; i++) {
        memset(msg, i, SEND_LEN);
        int rc = sm_send(c, msg, SEND_LEN);
        cr_assert(rc == 0 || rc == SM_ETIMEDOUT, "send %d: %d %s", i, rc, sm_last_error());
        if (rc == 0)
            sent[nsent++] = i;
        else
            timeouts++;
    }
    cr_assert_gt(timeouts, 0, "the peer not reading made sends time out");
    cr_assert_gt(nsent, 0);
    struct frame_reader r = { sm_conn_fd(server), sent, nsent, 0, 0, 0 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_frames, &r), 0);
    sm_options patient = { .send_timeout_ms = 10000 };
    sm_conn_set_options(c, &patient);
    cr_expect_eq(sm_flush(c), 0, "the rest of a started frame goes out: %s", sm_last_error());
    shutdown(sm_conn_fd(c), SHUT_WR);
    pthread_join(t, NULL);
    cr_expect_eq(r.corrupt, 0, "every frame whole and in order");
    cr_expect(r.corrupt || r.end == SM_ECLOSED, "the stream ended between frames, not with %s",
              sm_strerror(r.end));
    cr_expect_eq(r.got, nsent, "every send that returned 0 arrived (%d of %d), no other", r.got,
                 nsent);
    free(msg);
    close_pair(l, server, c);
}

/* ---- 2c. a receive reads while its held frames wait to go out ---- */

/* The test body is tests/support/client.c's: TLS runs it too. */
static void held_frames_never_block_a_receive(const char *addr)
{
    sm_options o = { .send_timeout_ms = 300, .recv_timeout_ms = 5000 };
    sm_listener *l;
    sm_conn *c, *peer;
    open_pair(addr, &o, &l, &peer, &c);
    held_frames_never_block_receiving(c, peer);
    close_pair(l, peer, c);
}

Test(promises, held_frames_never_block_a_tcp_receive, .timeout = 60)
{
    held_frames_never_block_a_receive("127.0.0.1:0");
}

Test(promises, held_frames_never_block_a_unix_receive, .timeout = 60)
{
    char addr[SM_ADDRSTRLEN];
    unix_addr(addr, sizeof addr, "held");
    held_frames_never_block_a_receive(addr);
}

/* ---- 3, 4. Unix sockets: connect waits for a full backlog, listen never blocks ---- */

struct late_accept {
    int fd;
    int after_ms;
};

static void *accept_later(void *arg)
{
    struct late_accept *a = arg;
    sleep_ms(a->after_ms);
    int c = accept(a->fd, NULL, NULL);
    sleep_ms(a->after_ms); /* room for the waiting connect, then it is taken */
    int d = accept(a->fd, NULL, NULL);
    if (c >= 0)
        close(c);
    if (d >= 0)
        close(d);
    return NULL;
}

Test(promises, unix_connect_waits_for_a_full_backlog, .timeout = 20)
{
    char addr[SM_ADDRSTRLEN];
    unix_addr(addr, sizeof addr, "backlog");
    const char *path = addr + 5; /* after "unix:" */
    int queued[16];
    int fd = full_unix_listener(path, queued);
    struct late_accept a = { fd, 200 };
    pthread_t t;
    pthread_create(&t, NULL, accept_later, &a);
    sm_options o = { .connect_timeout_ms = 5000 };
    sm_conn *c = NULL;
    int64_t start = now_ms();
    int rc = sm_connect_opts(&c, addr, &o);
    cr_expect_eq(rc, 0, "waits until the listener makes room: %d %s", rc, sm_last_error());
    cr_expect_geq(now_ms() - start, 150, "it did wait");
    pthread_join(t, NULL);
    sm_close(c);
    /* With nobody making room, the timeout ends it, with SM_ETIMEDOUT. */
    sm_conn *again = NULL;
    o.connect_timeout_ms = 200;
    start = now_ms();
    close_all_fds(queued);
    int fd2 = full_unix_listener(path, queued);
    rc = sm_connect_opts(&again, addr, &o);
    int64_t took = now_ms() - start;
    cr_expect_eq(rc, SM_ETIMEDOUT, "full backlog until the end: %d %s", rc, sm_last_error());
    cr_expect_geq(took, 150, "waited the timeout (%lld ms)", (long long)took);
    cr_expect_lt(took, 3000);
    close_all_fds(queued);
    close(fd);
    close(fd2);
    unlink(path);
}

struct listen_try {
    char addr[SM_ADDRSTRLEN];
    int rc;
};

static void *try_listen(void *arg)
{
    struct listen_try *t = arg;
    sm_listener *l = NULL;
    t->rc = sm_listen(&l, t->addr);
    sm_listener_close(l);
    return NULL;
}

Test(promises, unix_listen_never_blocks_on_a_live_server, .timeout = 20)
{
    struct listen_try t = { .rc = 1 };
    unix_addr(t.addr, sizeof t.addr, "live");
    const char *path = t.addr + 5; /* after "unix:" */
    int queued[16];
    int fd = full_unix_listener(path, queued);
    pthread_t th;
    pthread_create(&th, NULL, try_listen, &t);
    int64_t until = now_ms() + 3000;
    while (t.rc == 1 && now_ms() < until)
        sleep_ms(10);
    /* Let a blocked sm_listen go, so the test can end either way. */
    close_all_fds(queued);
    int c = accept(fd, NULL, NULL);
    cr_expect_neq(t.rc, 1, "sm_listen returned at once (it blocked)");
    pthread_join(th, NULL);
    cr_expect_eq(t.rc, -EADDRINUSE, "a live server keeps its socket: %d", t.rc);
    if (c >= 0)
        close(c);
    close(fd);
    unlink(path);
}

/* ---- 5. send_timeout_ms bounds every call, also behind other threads ---- */

struct timed_sender {
    sm_conn *c;
    int rc;
    int64_t took;
};

static void *send_big(void *arg)
{
    struct timed_sender *t = arg;
    size_t len = 4u << 20;
    uint8_t *msg = calloc(1, len);
    int64_t start = now_ms();
    t->rc = sm_send(t->c, msg, len);
    t->took = now_ms() - start;
    free(msg);
    return NULL;
}

Test(threads, send_timeout_bounds_every_thread, .timeout = 30)
{
    sm_options o = { .send_timeout_ms = 300 };
    sm_listener *l;
    sm_conn *c, *peer;
    unix_pair("threads", &o, &l, &peer, &c);
    /* The socket is full before they start: no send makes progress, so
     * each would hold the lock for its whole timeout. */
    static const uint8_t filler[4096];
    while (send(sm_conn_fd(c), filler, sizeof filler, MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
    }
    enum { THREADS = 4 };
    struct timed_sender s[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        s[i] = (struct timed_sender){ c, 1, 0 };
        pthread_create(&t[i], NULL, send_big, &s[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        cr_expect(s[i].rc == 0 || s[i].rc == SM_ETIMEDOUT, "thread %d: %d", i, s[i].rc);
        /* Before the fix: 303, 602, 903 and 1203 ms. */
        cr_expect_lt(s[i].took, 800, "thread %d took %lld ms for a 300 ms timeout", i,
                     (long long)s[i].took);
    }
    close_pair(l, peer, c);
}

/* ---- 6, 7, 11, 14. limits and arguments ---- */

Test(promises, max_queue_default_does_not_wrap)
{
    sm_server_options o = { .high_water = SIZE_MAX };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, &o, NULL), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    sm_conn_id id;
    cr_assert_eq(sm_server_adopt(s, sv[1], &id), 0);
    size_t len = 40u << 20;
    void *msg = calloc(1, len);
    int rc = sm_server_send(s, id, msg, len);
    cr_expect_eq(rc, 0, "a 40 MiB send fits the unbounded default queue: %s", sm_last_error());
    free(msg);
    sm_server_free(s);
    close(sv[0]);
}

Test(promises, connect_refuses_port_zero_in_any_spelling)
{
    const char *zeros[] = { "127.0.0.1:0", "127.0.0.1:00", "127.0.0.1:000", "[::1]:00000" };
    for (size_t i = 0; i < sizeof zeros / sizeof *zeros; i++) {
        sm_conn *c = NULL;
        int rc = sm_connect(&c, zeros[i]);
        cr_expect_eq(rc, SM_EADDR, "%s: %d %s", zeros[i], rc, sm_last_error());
        cr_expect_null(c);
    }
}

Test(promises, post_refuses_id_zero_and_ids_never_given)
{
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    cr_expect_eq(sm_server_post(s, 0, "x", 1), SM_EINVAL);
    cr_expect_eq(sm_server_post(s, UINT64_MAX >> 2, "x", 1), SM_ENOCONN);
    sm_server_free(s);
}

Test(promises, broadcast_that_succeeds_keeps_last_error)
{
    sm_server_options o = { .max_queue = 64, .high_water = 32 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, &o, NULL), 0);
    int a[2], b[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
    sm_conn_id full, open;
    cr_assert_eq(sm_server_adopt(s, a[1], &full), 0);
    cr_assert_eq(sm_server_adopt(s, b[1], &open), 0);
    char big[50] = { 0 };
    cr_assert_eq(sm_server_send(s, full, big, sizeof big), 0);
    cr_assert_eq(sm_server_send(s, 12345, "x", 1), SM_ENOCONN);
    char before[256];
    snprintf(before, sizeof before, "%s", sm_last_error());
    cr_assert_eq(sm_server_broadcast(s, big, 20, 0), 1, "queued to the one with room");
    cr_expect_str_eq(sm_last_error(), before, "a successful broadcast leaves the last error");
    sm_server_free(s);
    close(a[0]);
    close(b[0]);
}

/* ---- 11. posts are bounded and never dropped in the middle of a stream ---- */

enum { POSTS = 2000, POST_LEN = 1000 };

struct seq_reader {
    int fd;
    int got;    /* messages read in sequence */
    int broken; /* 1 if one was missing, repeated or damaged */
};

static void *read_sequence(void *arg)
{
    struct seq_reader *r = arg;
    uint8_t head[4], body[POST_LEN];
    while (r->got < POSTS && read_exact(r->fd, head, 4, now_ms() + READ_MS) == 0) {
        if (get32(head) != POST_LEN || read_exact(r->fd, body, POST_LEN, now_ms() + READ_MS) != 0 ||
            get32(body) != (uint32_t)r->got) {
            r->broken = 1;
            break;
        }
        r->got++;
    }
    return NULL;
}

Test(threads, post_queue_is_bounded_and_never_drops, .timeout = 60)
{
    sm_server_options o = { .max_posted = 64 * 1024,
                            .high_water = 8 * 1024,
                            .max_queue = 16 * 1024 };
    struct srv *v = server_up(&o, 0);
    int fd = raw_client(v->addr);
    wait_count(v, 0, 1, 5000);
    sm_conn_id id = srv_open_id(v, 0, NULL);
    cr_assert_neq(id, 0);
    struct seq_reader reader = { fd, 0, 0 };
    pthread_t t;
    int reading = 0, full = 0;
    uint8_t msg[POST_LEN] = { 0 };
    int64_t until = now_ms() + 30000;
    for (int i = 0; i < POSTS && now_ms() < until;) {
        put32(msg, (uint32_t)i);
        int rc = sm_server_post(v->s, id, msg, sizeof msg);
        if (rc == 0) {
            i++;
            continue;
        }
        cr_assert_eq(rc, SM_EFULL, "post %d: %d %s", i, rc, sm_last_error());
        full++;
        if (!reading) /* back-pressure reached the producer: now read */
            reading = !pthread_create(&t, NULL, read_sequence, &reader);
        sleep_ms(1);
    }
    cr_assert(reading, "a peer that does not read pushes back on the poster (SM_EFULL)");
    pthread_join(t, NULL);
    cr_expect_eq(reader.broken, 0, "message %d missing or out of order", reader.got);
    cr_expect_eq(reader.got, POSTS, "every post arrived (%d of %d)", reader.got, POSTS);
    close(fd);
    server_down(v);
}

/* ---- memory ceilings ---- */

/* Sends a header announcing `announce` bytes, then `send` of them. */
static int partial_frame_client(const char *addr, uint32_t announce, size_t send)
{
    int fd = raw_client(addr);
    uint8_t *buf = filled(4 + send, 0);
    put32(buf, announce);
    raw_write(fd, buf, 4 + send);
    free(buf);
    return fd;
}

/* One echo round trip on a fresh connection; returns its time in ms. */
static int64_t fresh_echo_ms(const char *addr)
{
    int64_t start = now_ms();
    int fd = raw_client(addr);
    uint8_t ping[4 + 4], back[8];
    put32(ping, 4);
    memcpy(ping + 4, "ping", 4);
    raw_write(fd, ping, sizeof ping);
    cr_assert_eq(read_exact(fd, back, sizeof back, now_ms() + READ_MS), 0);
    cr_assert_arr_eq(back, ping, sizeof ping);
    close(fd);
    return now_ms() - start;
}

Test(promises, budget_bounds_partial_frames_and_large_frames_still_finish, .timeout = 60)
{
    sm_server_options o = { .max_buffered = 4u << 20, .stall_timeout_ms = 500 };
    struct srv *v = server_up(&o, ECHO);
    enum { HOGS = 8 };
    int hog[HOGS];
    for (int i = 0; i < HOGS; i++)
        hog[i] = partial_frame_client(v->addr, 8u << 20, 2u << 20); /* 16 MiB offered */
    sleep_ms(300);
    sm_server_stats st;
    sm_server_get_stats(v->s, &st);
    /* Budget, plus one finisher's frame, plus a read's worth per client. */
    cr_expect_lt(st.buffered, (size_t)10 << 20, "held %zu bytes for a 4 MiB budget", st.buffered);
    cr_expect_lt(fresh_echo_ms(v->addr), 500, "small messages still flow");
    /* A client that sends its whole 3 MiB frame gets it echoed, once the
     * stalled finisher is reset. */
    size_t len = 3u << 20;
    int fd = partial_frame_client(v->addr, (uint32_t)len, len);
    uint8_t head[4];
    uint8_t *back = malloc(len);
    cr_assert_eq(read_exact(fd, head, 4, now_ms() + READ_MS), 0, "the large frame was served");
    cr_assert_eq(get32(head), len);
    cr_assert_eq(read_exact(fd, back, len, now_ms() + READ_MS), 0);
    sm_server_get_stats(v->s, &st);
    cr_expect_geq(st.stalled, 1, "a hog that stopped mid-frame was reset");
    free(back);
    close(fd);
    for (int i = 0; i < HOGS; i++)
        close(hog[i]);
    server_down(v);
}

/* An echoing test server on a Unix socket (the kernel holds little in
 * between, so back-pressure comes soon), a raw client of it and frames of
 * 1000 bytes for it to send. */
struct echo_case {
    struct srv *v;
    int fd;
    uint8_t *buf;
    size_t total;
};

static void echo_case_up(struct echo_case *e, const char *tag, const sm_server_options *o,
                         int count)
{
    char addr[SM_ADDRSTRLEN];
    unix_addr(addr, sizeof addr, tag);
    e->v = server_up_at(addr, o, ECHO);
    e->fd = raw_client(e->v->addr);
    e->buf = frames(count, 1000, &e->total);
}

static void echo_case_down(struct echo_case *e)
{
    free(e->buf);
    close(e->fd);
    server_down(e->v);
}

Test(promises, stall_timeout_resets_a_peer_that_never_reads, .timeout = 30)
{
    sm_server_options o = { .stall_timeout_ms = 300, .high_water = 64 * 1024 };
    struct echo_case e;
    echo_case_up(&e, "stall", &o, 2000);
    /* Write what the kernel takes: the server echoes into our closed ears. */
    offer(e.fd, e.buf, e.total, 3000, NULL);
    int reason;
    cr_assert_eq(closes_within(e.v, 10000, &reason), 1, "the stalled peer was reset");
    cr_expect_eq(reason, SM_ETIMEDOUT);
    /* on_close runs before the client's memory is given back: look again
     * for a moment (the server runs on its own thread). */
    sm_server_stats st;
    int64_t until = now_ms() + 2000;
    do
        sm_server_get_stats(e.v->s, &st);
    while (st.buffered && now_ms() < until && (sleep_ms(10), 1));
    cr_expect_eq(st.stalled, 1);
    cr_expect_eq(st.buffered, 0, "its memory is freed");
    echo_case_down(&e);
}

struct blocking_writer {
    int fd;
    const uint8_t *buf;
    size_t len;
    int rc; /* write_all's */
};

static void *write_everything(void *arg)
{
    struct blocking_writer *w = arg;
    w->rc = write_all(w->fd, w->buf, w->len);
    return NULL;
}

Test(promises, idle_timeout_spares_a_client_paused_for_backpressure, .timeout = 30)
{
    sm_server_options o = { .idle_timeout_ms = 300, .high_water = 16 * 1024 };
    struct echo_case e;
    echo_case_up(&e, "idle", &o, 4000); /* 4 MB: more than the kernel holds */
    struct blocking_writer w = { e.fd, e.buf, e.total, 0 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, write_everything, &w), 0);
    sleep_ms(1000); /* we do not read: the server pauses us, well past idle */
    cr_expect_eq(srv_count(e.v, 1), 0, "a paused client is not idle");
    uint8_t *back = malloc(e.total);
    cr_assert_eq(read_exact(e.fd, back, e.total, now_ms() + READ_MS), 0, "every echo arrives");
    cr_assert_arr_eq(back, e.buf, e.total);
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, 0, "write: %s", strerror(-w.rc));
    free(back);
    echo_case_down(&e);
}

/* ---- the acceptance figures: echo-server under a memory attack ---- */

/* Starts build/examples/echo-server on 127.0.0.1:0 (or $ECHO_BIN, to
 * measure another build), tracked (tests/support/proc.c); stores its
 * address. */
static pid_t start_echo_server(char addr[SM_ADDRSTRLEN])
{
    const char *bin = getenv("ECHO_BIN") ? getenv("ECHO_BIN") : BUILD_DIR "/examples/echo-server";
    const char *argv[] = { bin, "127.0.0.1:0", NULL };
    struct child c = spawn_child(argv, NULL, 0, 0);
    char line[SM_ADDRSTRLEN + 32];
    int n = read_line(c.out, line, sizeof line, READ_MS);
    close(c.out);
    cr_assert_geq(n, 0, "echo-server said nothing");
    cr_assert(strncmp(line, "listening on ", 13) == 0 && n - 13 < SM_ADDRSTRLEN, "%s", line);
    strcpy(addr, line + 13);
    return c.pid;
}

/* Writes to every socket what it takes, round robin, from src (src_len
 * bytes, the same for each), until all is sent or nothing moved for 1 s
 * (the server stopped reading: that is the point).  left[i] counts down
 * what client i still has to send. */
static void offer_all(const int *fd, size_t *left, int count, const uint8_t *src, size_t src_len)
{
    int64_t idle_since = now_ms();
    while (now_ms() - idle_since < 1000) {
        int moved = 0;
        for (int i = 0; i < count; i++) {
            if (!left[i])
                continue;
            size_t chunk = left[i] < 65536 ? left[i] : 65536;
            ssize_t n = send(fd[i], src + (src_len - left[i]), chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                left[i] -= (size_t)n;
                moved = 1;
            }
        }
        if (moved)
            idle_since = now_ms();
        else
            sleep_ms(5);
    }
}

static int64_t median_echo_ms(const char *addr)
{
    int64_t t[5];
    for (int i = 0; i < 5; i++)
        t[i] = fresh_echo_ms(addr);
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) {
                int64_t x = t[i];
                t[i] = t[j];
                t[j] = x;
            }
    return t[2];
}

Test(promises, echo_server_memory_stays_under_the_ceiling, .timeout = 180,
     .fini = kill_tracked_children)
{
    char addr[SM_ADDRSTRLEN];
    pid_t pid = start_echo_server(addr);
    sleep_ms(100);
    long start_rss = rss_of(pid);
    enum { HOLDERS = 96, DEAF = 8, ALL = HOLDERS + DEAF };
    int fd[ALL];
    size_t left[ALL];
    /* 96 clients announce 16 MiB and send 8 MiB of it... */
    size_t part = 8u << 20, stream_len = 16u << 20;
    uint8_t *zeros = filled(part, 0);
    for (int i = 0; i < HOLDERS; i++) {
        fd[i] = raw_client(addr);
        uint8_t head[4];
        put32(head, 16u << 20);
        raw_write(fd[i], head, 4);
        left[i] = part;
    }
    /* ...and 8 send 16 MiB of 64 KiB messages to be echoed, never reading. */
    uint8_t *stream = filled(stream_len, 0);
    for (size_t off = 0; off < stream_len; off += 65536)
        put32(stream + off, 65536 - 4);
    for (int i = HOLDERS; i < ALL; i++) {
        fd[i] = raw_client(addr);
        left[i] = stream_len;
    }
    offer_all(fd, left, HOLDERS, zeros, part);
    offer_all(fd + HOLDERS, left + HOLDERS, DEAF, stream, stream_len);
    size_t offered = 0, sent_deaf = 0;
    for (int i = 0; i < HOLDERS; i++)
        offered += part - left[i];
    for (int i = HOLDERS; i < ALL; i++)
        sent_deaf += stream_len - left[i];
    long peak = hwm_of(pid);
    int64_t echo = median_echo_ms(addr);
    for (int i = 0; i < ALL; i++)
        close(fd[i]);
    sleep_ms(1500);
    long end_rss = rss_of(pid);
    cr_log_info("echo-server: RSS %ld MiB at start, peak %ld MiB, %ld MiB after; %zu MiB of "
                "partial frames and %zu MiB to deaf peers taken; fresh echo median %lld ms",
                start_rss / MiB, peak / MiB, end_rss / MiB, offered >> 20, sent_deaf >> 20,
                (long long)echo);
    kill(pid, SIGTERM);
    int status;
    reap(pid, READ_MS, &status);
    free(zeros);
    free(stream);
    if (UNDER_SANITIZER) /* sanitizers keep freed memory: RSS says nothing */
        return;
    cr_expect_lt(peak, 400 * MiB, "peak RSS %ld MiB", peak / MiB);
    cr_expect_lt(end_rss - start_rss, 64 * MiB, "RSS %ld MiB above the start once they left",
                 (end_rss - start_rss) / MiB);
    cr_expect_lt(echo, 50, "a fresh client's echo took %lld ms meanwhile", (long long)echo);
}
