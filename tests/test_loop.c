/*
 * Inside someone else's event loop: non-blocking connections, the
 * embeddable server (sm_server_fd, sm_server_timeout, sm_server_run_once),
 * timers, calls from other threads, and pausing one client.
 */
#include "support/support.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static short poll_events(int want)
{
    return (short)((want & SM_WANT_READ ? POLLIN : 0) | (want & SM_WANT_WRITE ? POLLOUT : 0));
}

/* A connected pair over a Unix socketpair: *nb non-blocking, *peer blocking. */
static void nonblocking_pair(sm_conn **nb, sm_conn **peer, int *peer_fd)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sm_options o = { .nonblocking = 1 };
    cr_assert_eq(sm_conn_adopt(nb, sv[0], sv[0], &o), 0, "%s", sm_last_error());
    if (peer)
        cr_assert_eq(sm_conn_adopt(peer, sv[1], sv[1], NULL), 0, "%s", sm_last_error());
    else
        *peer_fd = sv[1];
}

/* ---- a peer that sends a large frame in 1 KiB pieces, one every ms ---- */

struct dripper {
    int fd;
    size_t len;
    int pieces;
};

static void *drip_frames(void *arg)
{
    struct dripper *d = arg;
    for (unsigned f = 0; f < 3; f++) {
        uint8_t *buf = malloc(4 + d->len);
        put32(buf, (uint32_t)d->len);
        pattern_fill(buf + 4, d->len, f);
        for (size_t off = 0; off < 4 + d->len; off += 1024) {
            size_t n = 4 + d->len - off < 1024 ? 4 + d->len - off : 1024;
            if (send(d->fd, buf + off, n, MSG_NOSIGNAL) != (ssize_t)n)
                break;
            d->pieces++;
            sleep_ms(1);
        }
        free(buf);
    }
    return NULL;
}

static void on_tick(sm_server *s, uint64_t id, void *arg)
{
    (void)s;
    (void)id;
    atomic_fetch_add((atomic_int *)arg, 1);
}

Test(loop, large_frames_in_pieces_never_block_or_spin_the_loop, .timeout = 60)
{
    enum { LEN = 256 * 1024 };
    sm_conn *c;
    int peer;
    nonblocking_pair(&c, NULL, &peer);
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    atomic_int ticks = 0;
    cr_assert_eq(sm_server_timer(s, 10, 10, on_tick, &ticks, NULL), 0);
    struct dripper d = { peer, LEN, 0 };
    pthread_t t;
    pthread_create(&t, NULL, drip_frames, &d);
    uint8_t *buf = malloc(LEN);
    int got = 0, wakeups = 0;
    int64_t start = now_ms(), longest_call = 0;
    while (got < 3 && now_ms() - start < 30000) {
        struct pollfd p[2] = { { sm_conn_fd(c), poll_events(sm_conn_events(c)), 0 },
                               { sm_server_fd(s), POLLIN, 0 } };
        poll(p, 2, sm_server_timeout(s));
        wakeups++;
        sm_server_run_once(s, 0);
        for (;;) {
            int64_t before = now_ms();
            ssize_t n = recv_by(c, (enum recv_call)got, buf, LEN); /* recv, alloc, view */
            if (now_ms() - before > longest_call)
                longest_call = now_ms() - before;
            if (n == SM_EAGAIN)
                break;
            cr_assert_eq(n, LEN, "frame %d: %zd %s", got, n, sm_last_error());
            for (size_t i = 0; i < LEN; i += 61)
                cr_assert_eq(buf[i], pattern_byte(i, (unsigned)got), "frame %d byte %zu", got, i);
            got++;
        }
    }
    int64_t elapsed = now_ms() - start;
    pthread_join(t, NULL);
    cr_assert_eq(got, 3, "all three frames whole");
    cr_expect_lt(longest_call, 20, "a call took %lld ms: it waited", (long long)longest_call);
    /* One wake-up per piece and per tick at most, and some slack: a loop
     * that spun would wake millions of times. */
    int ticks_seen = atomic_load(&ticks);
    cr_expect_leq(wakeups, d.pieces + ticks_seen + 50, "%d wake-ups for %d pieces, %d ticks",
                  wakeups, d.pieces, ticks_seen);
    cr_expect_geq(ticks_seen, elapsed / 10 / 3, "the timer kept firing: %d in %lld ms", ticks_seen,
                  (long long)elapsed);
    free(buf);
    close(peer);
    sm_close(c);
    sm_server_free(s);
}

Test(loop, nonblocking_send_holds_what_the_socket_cannot_take)
{
    sm_conn *c;
    int peer;
    nonblocking_pair(&c, NULL, &peer);
    char msg[1000];
    int sent = 0, rc;
    memset(msg, 'x', sizeof msg);
    int64_t start = now_ms();
    while ((rc = sm_send(c, msg, sizeof msg)) == 0 && sent < 100000)
        sent++;
    cr_assert_eq(rc, SM_EAGAIN, "full: %d %s", rc, sm_last_error());
    cr_expect_lt(now_ms() - start, 2000, "never waited");
    cr_expect(sm_conn_events(c) & SM_WANT_WRITE, "held bytes want writability");
    /* The peer reads everything; the caller flushes when writable. */
    size_t want = (size_t)sent * (4 + sizeof msg), have = 0;
    uint8_t *buf = malloc(want);
    while (have < want && now_ms() - start < 20000) {
        ssize_t n = recv(peer, buf + have, want - have, MSG_DONTWAIT);
        if (n > 0)
            have += (size_t)n;
        struct pollfd p = { sm_conn_fd(c), POLLOUT, 0 };
        if (poll(&p, 1, 1) > 0) {
            rc = sm_flush(c);
            cr_assert(rc == 0 || rc == SM_EAGAIN, "flush: %d", rc);
        }
    }
    cr_assert_eq(have, want, "every message that returned 0 arrived (%zu of %zu)", have, want);
    for (int i = 0; i < sent; i++) {
        const uint8_t *f = buf + (size_t)i * (4 + sizeof msg);
        cr_assert_eq(get32(f), sizeof msg, "frame %d header", i);
    }
    cr_expect_eq(sm_conn_events(c), SM_WANT_READ, "nothing held any more");
    free(buf);
    close(peer);
    sm_close(c);
}

/* Receives one message on non-blocking c the way a poll() loop does:
 * poll for what it wants, receive, again on SM_EAGAIN (bounded). */
static ssize_t poll_and_receive(sm_conn *c, char *buf, size_t cap)
{
    int64_t end = now_ms() + WAIT_MS;
    ssize_t n = SM_EAGAIN;
    while (n == SM_EAGAIN && now_ms() < end) {
        struct pollfd p = { sm_conn_fd(c), poll_events(sm_conn_events(c)), 0 };
        poll(&p, 1, 100);
        n = sm_recv(c, buf, cap);
    }
    return n;
}

/* A non-blocking pair whose *c has just read a message with a short
 * read: its next read is the one skipped. */
static void after_a_short_read(sm_conn **c, int *peer)
{
    nonblocking_pair(c, NULL, peer);
    char buf[8];
    cr_assert_eq(raw_send_frame(*peer, "one", 3), 0);
    cr_assert_eq(poll_and_receive(*c, buf, sizeof buf), 3, "%s", sm_last_error());
}

/* A non-blocking receive skips the read right after one that came back
 * short (it could only say SM_EAGAIN).  Whatever came meanwhile is not
 * missed: poll sees it, and the next call reads it. */
Test(loop, a_drain_until_eagain_misses_nothing_that_came_meanwhile)
{
    sm_conn *c;
    int peer;
    after_a_short_read(&c, &peer);
    char buf[64];
    /* "two" is in the kernel before the drain's last call. */
    cr_assert_eq(raw_send_frame(peer, "two", 3), 0);
    wait_unread(sm_conn_fd(c), 7);
    ssize_t n = sm_recv(c, buf, sizeof buf);
    if (n == SM_EAGAIN) {
        struct pollfd p = { sm_conn_fd(c), poll_events(sm_conn_events(c)), 0 };
        cr_assert_eq(poll(&p, 1, 0), 1, "poll says at once that there is more");
        n = sm_recv(c, buf, sizeof buf);
    }
    cr_assert_eq(n, 3, "the message that came meanwhile: %zd %s", n, sm_last_error());
    cr_assert_eq(memcmp(buf, "two", 3), 0);
    close(peer);
    sm_close(c);
}

struct late_frame {
    int fd;
    int after_ms;
};

static void *send_late(void *arg)
{
    struct late_frame *l = arg;
    sleep_ms(l->after_ms);
    raw_send_frame(l->fd, "late", 4);
    return NULL;
}

/* Switched to blocking after a short non-blocking read, a receive waits
 * for the next message: the skipped read is the non-blocking mode's only. */
Test(loop, a_connection_switched_to_blocking_waits_again)
{
    sm_conn *c;
    int peer;
    after_a_short_read(&c, &peer);
    char buf[64];
    sm_options blocking = { .recv_timeout_ms = WAIT_MS };
    cr_assert_eq(sm_conn_set_options(c, &blocking), 0, "%s", sm_last_error());
    struct late_frame l = { peer, 100 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, send_late, &l), 0);
    ssize_t n = sm_recv(c, buf, sizeof buf);
    pthread_join(t, NULL);
    cr_assert_eq(n, 4, "the blocking receive waited for the message: %zd %s", n, sm_last_error());
    close(peer);
    sm_close(c);
}

/* A non-blocking connection to where, once its fd is writable: connected
 * or refused. */
static sm_conn *connect_and_poll(const char *where)
{
    sm_options o = { .nonblocking = 1 };
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, where, &o), 0, "%s", sm_last_error());
    struct pollfd p = { sm_conn_fd(c), POLLOUT, 0 };
    cr_assert_eq(poll(&p, 1, 5000), 1);
    return c;
}

Test(loop, nonblocking_connect_completes_through_the_fd)
{
    sm_listener *l;
    char where[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen(&l, "127.0.0.1:0"), 0);
    sm_listener_addr(l, where, sizeof where);
    sm_options o = { .nonblocking = 1 };
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, where, &o), 0, "%s", sm_last_error());
    int rc = sm_conn_connected(c);
    cr_assert(rc == 0 || rc == SM_EAGAIN);
    if (rc == SM_EAGAIN) {
        cr_expect_eq(sm_conn_events(c), SM_WANT_WRITE);
        struct pollfd p = { sm_conn_fd(c), POLLOUT, 0 };
        cr_assert_eq(poll(&p, 1, 5000), 1);
        cr_assert_eq(sm_conn_connected(c), 0, "%s", sm_last_error());
    }
    cr_assert_eq(sm_send(c, "hi", 2), 0);
    sm_conn *server;
    cr_assert_eq(sm_accept(l, &server), 0);
    char buf[4];
    cr_assert_eq(sm_recv(server, buf, sizeof buf), 2);
    sm_close(server);
    sm_close(c);
    /* Nobody listens there now: the refusal comes back through the fd. */
    sm_listener_close(l);
    c = connect_and_poll(where);
    cr_expect_eq(sm_conn_connected(c), -ECONNREFUSED);
    cr_expect_eq(sm_send(c, "x", 1), -ECONNREFUSED, "the error sticks");
    cr_expect_eq(sm_recv(c, buf, sizeof buf), -ECONNREFUSED);
    sm_close(c);
}

/* ---- the embeddable server ---- */

Test(loop, run_once_with_zero_never_waits)
{
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    cr_assert_eq(sm_server_listen(s, "127.0.0.1:0"), 0);
    cr_expect_eq(sm_server_timeout(s), -1, "nothing scheduled");
    int64_t start = now_ms();
    for (int i = 0; i < 100; i++)
        cr_assert_eq(sm_server_run_once(s, 0), 0);
    cr_expect_lt(now_ms() - start, 500, "100 idle calls took %lld ms",
                 (long long)(now_ms() - start));
    sm_server_free(s);
}

Test(loop, server_fd_is_pollable_and_run_once_serves)
{
    sm_server_handlers h = { .on_message = echo_message };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, NULL, NULL), 0);
    cr_assert_eq(sm_server_listen(s, "127.0.0.1:0"), 0);
    char where[SM_ADDRSTRLEN];
    sm_server_addr(s, 0, where, sizeof where);
    struct pollfd p = { sm_server_fd(s), POLLIN, 0 };
    cr_expect_eq(poll(&p, 1, 0), 0, "quiet before anyone connects");
    sm_options o = { .nonblocking = 1 };
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, where, &o), 0);
    cr_expect_eq(poll(&p, 1, 2000), 1, "readable once a client connects");
    char buf[8];
    ssize_t n = SM_EAGAIN;
    int64_t start = now_ms();
    int sent = 0;
    while (n == SM_EAGAIN && now_ms() - start < 5000) {
        if (!sent && sm_send(c, "ping", 4) == 0)
            sent = 1;
        struct pollfd both[2] = { { sm_server_fd(s), POLLIN, 0 },
                                  { sm_conn_fd(c), poll_events(sm_conn_events(c)), 0 } };
        poll(both, 2, 100);
        sm_server_run_once(s, 0);
        n = sm_recv(c, buf, sizeof buf);
    }
    cr_assert_eq(n, 4, "echoed through run_once: %zd %s", n, sm_last_error());
    sm_close(c);
    sm_server_free(s);
}

Test(loop, stop_ends_run_once_with_every_client_closed)
{
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(sm_server_adopt(s, sv[1], NULL), 0);
    sm_server_stop(s);
    cr_expect_eq(sm_server_run_once(s, 0), SM_ESTOPPED);
    sm_server_stats st;
    sm_server_get_stats(s, &st);
    cr_expect_eq(st.conns, 0);
    cr_expect_geq(sm_server_run_once(s, 0), 0, "and it may run again");
    sm_server_free(s);
    close(sv[0]);
}

/* ---- timers ---- */

struct timer_log {
    int once, every, self;
    uint64_t self_id;
};

static void once(sm_server *s, uint64_t id, void *arg)
{
    (void)s;
    (void)id;
    ((struct timer_log *)arg)->once++;
}

static void every(sm_server *s, uint64_t id, void *arg)
{
    (void)s;
    (void)id;
    ((struct timer_log *)arg)->every++;
}

static void stops_itself(sm_server *s, uint64_t id, void *arg)
{
    struct timer_log *log = arg;
    if (++log->self == 3)
        cr_assert_eq(sm_server_cancel_timer(s, id), 0);
}

Test(loop, timers_fire_once_repeat_and_cancel)
{
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    struct timer_log log = { 0 };
    uint64_t a, b, c, cancelled;
    cr_assert_eq(sm_server_timer(s, 30, 0, once, &log, &a), 0);
    cr_assert_eq(sm_server_timer(s, 10, 10, every, &log, &b), 0);
    cr_assert_eq(sm_server_timer(s, 5, 5, stops_itself, &log, &c), 0);
    cr_assert_eq(sm_server_timer(s, 20, 0, once, &log, &cancelled), 0);
    cr_assert_eq(sm_server_cancel_timer(s, cancelled), 0);
    cr_expect(a && b && c && a != b && b != c, "distinct ids, never 0");
    int t = sm_server_timeout(s);
    cr_expect(t >= 0 && t <= 5, "the next timer is due within 5 ms: %d", t);
    int64_t start = now_ms();
    while (now_ms() - start < 210)
        sm_server_run_once(s, -1);
    cr_expect_eq(log.once, 1, "a one-shot fires once; a cancelled one never");
    cr_expect_geq(log.every, 10, "every 10 ms for 200 ms: %d", log.every);
    cr_expect_leq(log.every, 22);
    cr_expect_eq(log.self, 3, "a timer cancelled from its callback stops");
    cr_expect_eq(sm_server_cancel_timer(s, a), SM_ENOCONN, "a one-shot that ran is gone");
    cr_expect_eq(sm_server_cancel_timer(s, b), 0);
    cr_expect_eq(sm_server_timer(s, -1, 0, once, &log, NULL), SM_EINVAL);
    cr_expect_eq(sm_server_timer(s, 1, 0, NULL, &log, NULL), SM_EINVAL);
    sm_server_free(s);
}

/* ---- calls from other threads ---- */

struct call_log {
    pthread_t loop;
    int off_loop;
    int last[4];
    int out_of_order;
    atomic_int done;
};

struct call {
    struct call_log *log;
    int thread, seq;
};

static struct call calls[4][200];

static void record_call(sm_server *s, void *arg)
{
    (void)s;
    struct call *c = arg;
    if (!pthread_equal(pthread_self(), c->log->loop))
        c->log->off_loop++;
    if (c->seq != c->log->last[c->thread] + 1)
        c->log->out_of_order++;
    c->log->last[c->thread] = c->seq;
    atomic_fetch_add(&c->log->done, 1);
}

struct caller {
    sm_server *s;
    int thread;
};

static void *make_calls(void *arg)
{
    struct caller *c = arg;
    for (int i = 0; i < 200; i++)
        while (sm_server_call(c->s, record_call, &calls[c->thread][i]) == SM_EFULL)
            sleep_ms(1);
    return NULL;
}

Test(threads, calls_run_on_the_loop_thread_in_order, .timeout = 30)
{
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    static struct call_log log;
    memset(log.last, 0xff, sizeof log.last); /* -1: the first seq is 0 */
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 200; i++)
            calls[t][i] = (struct call){ &log, t, i };
    struct idle_srv loop;
    idle_start(&loop, s, &log.loop);
    pthread_t th[4];
    struct caller callers[4];
    for (int t = 0; t < 4; t++) {
        callers[t] = (struct caller){ s, t };
        pthread_create(&th[t], NULL, make_calls, &callers[t]);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    int64_t start = now_ms();
    while (atomic_load(&log.done) < 800 && now_ms() - start < 10000)
        sleep_ms(5);
    sm_server_stop(s);
    pthread_join(log.loop, NULL);
    cr_expect_eq(atomic_load(&log.done), 800, "every call ran");
    cr_expect_eq(log.off_loop, 0, "all on the loop thread");
    cr_expect_eq(log.out_of_order, 0, "in the order each thread made them");
    cr_expect_eq(sm_server_call(s, NULL, NULL), SM_EINVAL);
    sm_server_free(s);
}

/* ---- pausing one client ---- */

struct pause_log {
    atomic_int messages;
    atomic_int closes;
};

static void count_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)s;
    (void)id;
    (void)msg;
    (void)len;
    atomic_fetch_add(&((struct pause_log *)arg)->messages, 1);
}

static void count_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)s;
    (void)id;
    (void)reason;
    atomic_fetch_add(&((struct pause_log *)arg)->closes, 1);
}

static void run_for(sm_server *s, int ms)
{
    int64_t until = now_ms() + ms;
    while (now_ms() < until)
        sm_server_run_once(s, (int)(until - now_ms()));
}

Test(loop, a_paused_client_is_not_read_nor_closed_as_idle)
{
    struct pause_log log = { 0 };
    sm_server_handlers h = { .on_message = count_message, .on_close = count_close };
    sm_server_options o = { .idle_timeout_ms = 100 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, &o, &log), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sm_conn_id id;
    cr_assert_eq(sm_server_adopt(s, sv[1], &id), 0);
    cr_assert_eq(sm_server_pause(s, id), 0);
    uint8_t frame[5];
    put32(frame, 1);
    frame[4] = 'x';
    for (int i = 0; i < 3; i++)
        cr_assert_eq(write(sv[0], frame, sizeof frame), (ssize_t)sizeof frame);
    run_for(s, 300);
    cr_expect_eq(atomic_load(&log.messages), 0, "nothing read while paused");
    cr_expect_eq(atomic_load(&log.closes), 0, "not idle: we paused it");
    cr_assert_eq(sm_server_resume(s, id), 0);
    run_for(s, 50);
    cr_expect_eq(atomic_load(&log.messages), 3, "read again on resume");
    run_for(s, 200);
    cr_expect_eq(atomic_load(&log.closes), 1, "idle for real now");
    cr_expect_eq(sm_server_pause(s, id), SM_ENOCONN);
    sm_server_free(s);
    close(sv[0]);
}

/* ---- smaller promises of the non-blocking mode ---- */

Test(loop, nonblocking_accept_returns_eagain_at_once)
{
    sm_options o = { .nonblocking = 1, .accept_timeout_ms = 5000 };
    sm_listener *l;
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), 0);
    sm_conn *c = NULL;
    int64_t start = now_ms();
    cr_expect_eq(sm_accept(l, &c), SM_EAGAIN);
    cr_expect_lt(now_ms() - start, 1000, "it did not wait for the accept timeout");
    cr_expect_null(c);
    sm_listener_close(l);
}

Test(loop, a_failed_connect_is_reported_by_every_call)
{
    char where[SM_ADDRSTRLEN];
    closed_addr("127.0.0.1:0", where);
    sm_conn *c = connect_and_poll(where);
    char buf[4];
    cr_expect_eq(sm_recv(c, buf, sizeof buf), -ECONNREFUSED, "the first call learns it");
    cr_expect_eq(sm_conn_connected(c), -ECONNREFUSED, "and sm_conn_connected still says so");
    sm_close(c);
}

static void send_outside_a_handler(sm_server *s, sm_conn_id id)
{
    cr_assert_eq(sm_server_send(s, id, "late", 4), 0);
    cr_expect_eq(sm_server_timeout(s), 0, "queued output asks for a call now");
}

Test(loop, output_queued_outside_a_handler_asks_for_a_call)
{
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sm_conn_id id;
    cr_assert_eq(sm_server_adopt(s, sv[1], &id), 0);
    sm_server_run_once(s, 0);
    cr_expect_eq(sm_server_timeout(s), -1);
    send_outside_a_handler(s, id);
    sm_server_run_once(s, sm_server_timeout(s));
    uint8_t got[8];
    cr_expect_eq(recv(sv[0], got, sizeof got, MSG_DONTWAIT), 8, "written by that call");
    cr_expect_eq(sm_server_cancel_timer(NULL, 1), SM_EINVAL);
    sm_server_free(s);
    close(sv[0]);
}
