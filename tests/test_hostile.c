/*
 * Hostile peers, one subject at a time: oversize headers, truncated
 * frames, resets mid-frame, random garbage, idle and slow-drip peers,
 * peers that never read, connect-and-vanish, running out of descriptors,
 * SIGPIPE, and the blocking API as the receiver of hostile streams.
 *
 * Suite "hostile" drives raw sockets (tests/support/net.c: the bytes on
 * the wire are exactly what a case says) against the echo-server example,
 * run as a process of its own so its memory (VmRSS and the peak VmHWM),
 * descriptors and CPU time are its own; and, where it makes sense, against
 * the blocking API in this process.  After every case a fresh,
 * well-behaved client must get its echo within FRESH_MS and the server's
 * memory must stay within a bound stated next to each case.
 *
 * Suite "server" drives the in-process test server (support/server.c) on
 * the same subjects, where its log shows why each connection
 * was closed (the on_close reason) and that only the hostile one was.
 *
 * Every loop is bounded in count and time; every process this file starts
 * is recorded by PID and killed by PID (and reaped) in the hostile suite's
 * .fini, or by reap() in the server suite's, whatever happened.
 */
#include "support/support.h"

#include <criterion/logging.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define ECHO_SERVER BUILD_DIR "/examples/echo-server"
#define FRESH_MS 500 /* a fresh client's connect + echo after each case */

TestSuite(hostile, .fini = kill_tracked_children);

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ */
/* The echo-server, a process of its own                               */
/* ------------------------------------------------------------------ */

struct echo {
    pid_t pid;
    int out; /* read end of its stdout */
    char addr[SM_ADDRSTRLEN];
};

/* Our environment for the child.  Under AddressSanitizer the server's
 * freed blocks would sit in a 256 MiB quarantine and RSS would say little
 * about what it holds, so the child gets a small quarantine. */
static char **child_env(char *slot, size_t cap)
{
    const char *asan = getenv("ASAN_OPTIONS");
    if (!UNDER_ASAN)
        return env_with("ASAN_OPTIONS", asan, slot, cap);
    char small[256];
    snprintf(small, sizeof small, "%s%squarantine_size_mb=4", asan ? asan : "",
             asan && *asan ? ":" : "");
    return env_with("ASAN_OPTIONS", small, slot, cap);
}

/* Starts echo-server 127.0.0.1:0 and reads its "listening on ADDR" line.
 * nofile > 0 lowers its RLIMIT_NOFILE. */
static void echo_start(struct echo *e, long nofile)
{
    char slot[512];
    char **env = child_env(slot, sizeof slot);
    const char *argv[] = { ECHO_SERVER, "127.0.0.1:0", NULL };
    struct child c = spawn_child(argv, env, nofile, 0);
    free(env);
    e->pid = c.pid;
    e->out = c.out;
    char line[SM_ADDRSTRLEN + 32];
    cr_assert(read_line(e->out, line, sizeof line, 10000) >= 0, "%s printed no listening line",
              argv[0]);
    cr_assert(strncmp(line, "listening on ", 13) == 0, "got '%s'", line);
    cr_assert(strlen(line + 13) < SM_ADDRSTRLEN);
    strcpy(e->addr, line + 13);
}

/* The server is still running (did not die of SIGPIPE, a crash, ...).  A
 * dead one is left unreaped, for the suite's .fini. */
static void assert_alive(const struct echo *e, const char *after)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int rc = waitid(P_PID, (id_t)e->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    cr_assert_eq(rc, 0, "waitid: %s", strerror(errno));
    if (si.si_pid == e->pid)
        cr_assert_fail("echo-server died after %s: %s %d", after,
                       si.si_code == CLD_EXITED ? "exit status" : "signal", si.si_status);
}

/* SIGTERM must make it exit 0 (a clean stop, so it was healthy). */
static void echo_stop(struct echo *e)
{
    assert_alive(e, "the case");
    cr_assert_eq(kill(e->pid, SIGTERM), 0);
    int status = -1;
    int exited = reap(e->pid, 10000, &status);
    close(e->out);
    cr_assert(exited, "echo-server did not stop on SIGTERM");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "echo-server: status %#x", status);
}

/* ------------------------------------------------------------------ */
/* The fresh, well-behaved client                                      */
/* ------------------------------------------------------------------ */

/* One echo on c; the round trip in ms. */
static double echo_rtt(sm_conn *c)
{
    static unsigned seq;
    char msg[64], got[64];
    int len = snprintf(msg, sizeof msg, "well-behaved %u %ld", ++seq, (long)getpid());
    double t0 = now_ms_f();
    cr_assert_eq(sm_send(c, msg, (size_t)len), 0, "send: %s", sm_last_error());
    ssize_t n = sm_recv(c, got, sizeof got);
    double took = now_ms_f() - t0;
    cr_assert_eq(n, len, "echo: %s", n < 0 ? sm_last_error() : "wrong length");
    cr_assert(memcmp(got, msg, (size_t)len) == 0, "wrong echo");
    return took;
}

/* A fresh client connects, gets its echo, leaves: the time in ms, which
 * must be under bound_ms. */
static double fresh_echo(const char *addr, double bound_ms, const char *after)
{
    double t0 = now_ms_f();
    sm_conn *c = client_to(addr);
    echo_rtt(c);
    double took = now_ms_f() - t0;
    sm_close(c);
    cr_assert_lt(took, bound_ms,
                 "after %s, a fresh client waited %.1f ms for its echo (bound %.0f)", after, took,
                 bound_ms);
    return took;
}

/* The check after every case against the echo-server: alive, a fresh
 * client served within FRESH_MS, and VmRSS grown less than bound bytes
 * since rss0. */
static void server_ok(const struct echo *e, long rss0, long bound, const char *after)
{
    assert_alive(e, after);
    double ms = fresh_echo(e->addr, FRESH_MS, after);
    long rss = rss_of(e->pid);
    cr_log_info("%s: fresh client %.2f ms; server RSS %+ld KiB (bound %ld KiB)", after, ms,
                (rss - rss0) >> 10, bound >> 10);
    cr_assert_lt(rss - rss0, bound, "after %s, echo-server RSS grew %ld KiB (bound %ld KiB)", after,
                 (rss - rss0) >> 10, bound >> 10);
}

/* A warm-up so one-time costs (the loop's scratch, malloc arenas, the
 * first queue) land in the baseline: a few echoes of several sizes. */
static long warm_baseline(const struct echo *e)
{
    sm_conn *c = client_to(e->addr);
    size_t sizes[] = { 10, 1000, 60000, 300000, 5 };
    uint8_t *msg = malloc(300000);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        memset(msg, (int)i + 1, sizes[i]);
        cr_assert_eq(sm_send(c, msg, sizes[i]), 0);
        void *got;
        cr_assert_eq(sm_recv_alloc(c, &got), (ssize_t)sizes[i], "%s", sm_last_error());
        free(got);
    }
    free(msg);
    sm_close(c);
    sleep_ms(50);
    return rss_of(e->pid);
}

/* A fresh echo-server (nofile > 0: that RLIMIT_NOFILE), warmed up: its
 * baseline RSS. */
static long echo_up(struct echo *e, long nofile)
{
    echo_start(e, nofile);
    return warm_baseline(e);
}
/* ------------------------------------------------------------------ */
/* Oversize headers                                                    */
/* ------------------------------------------------------------------ */

/* Announced sizes must cost nothing: the peak RSS (VmHWM) of the server
 * may not grow by more than this while a peer announces 4 GiB or 16 MiB + 1
 * and then pushes up to 8 MiB of "payload" after the header. */
#define HEADER_BOUND (4 * MiB)
#define PUSH_AFTER_HEADER (8 * MiB)

Test(hostile, oversize_headers_close_without_allocating, .timeout = 30)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    long hwm0 = hwm_of(e.pid);
    uint8_t *junk = filled(PUSH_AFTER_HEADER, 'j');
    static const uint32_t announced[] = { 0xFFFFFFFFu, SM_DEFAULT_MAX_FRAME + 1 };
    for (size_t i = 0; i < 2; i++) {
        for (int round = 0; round < 3; round++) {
            int fd = raw_client(e.addr);
            uint8_t h[4];
            put32(h, announced[i]);
            raw_write(fd, h, 4);
            size_t pushed = offer(fd, junk, PUSH_AFTER_HEADER, 2000, NULL);
            char what[96];
            snprintf(what, sizeof what, "header %#x (pushed %zu KiB after it)", announced[i],
                     pushed >> 10);
            assert_closed_by_peer(fd, what);
            cr_assert_lt(pushed, (size_t)PUSH_AFTER_HEADER,
                         "%s: the server read all %ld MiB of the payload", what,
                         PUSH_AFTER_HEADER / MiB);
            close(fd);
        }
        long hwm = hwm_of(e.pid);
        cr_log_info("header %#x: server peak RSS %+ld KiB (bound %ld KiB)", announced[i],
                    (hwm - hwm0) >> 10, HEADER_BOUND >> 10);
        cr_assert_lt(hwm - hwm0, HEADER_BOUND,
                     "header %#x: server peak RSS grew %ld KiB (bound %ld KiB)", announced[i],
                     (hwm - hwm0) >> 10, HEADER_BOUND >> 10);
        server_ok(&e, rss0, HEADER_BOUND, "oversize header");
    }
    /* The measure can see it: exactly max frame is a message, echoed, and
     * the peak grows by at least its size. */
    sm_conn *c = client_to(e.addr);
    cr_assert_eq(sm_send(c, junk, SM_DEFAULT_MAX_FRAME / 2), 0);
    void *got;
    cr_assert_eq(sm_recv_alloc(c, &got), (ssize_t)(SM_DEFAULT_MAX_FRAME / 2), "%s",
                 sm_last_error());
    free(got);
    uint8_t h[4];
    put32(h, SM_DEFAULT_MAX_FRAME);
    int fd = raw_client(e.addr);
    raw_write(fd, h, 4);
    raw_write(fd, junk, PUSH_AFTER_HEADER);
    raw_write(fd, junk, SM_DEFAULT_MAX_FRAME - PUSH_AFTER_HEADER);
    cr_assert_eq(read_exact(fd, h, 4, now_ms() + WAIT_MS), 0, "no echo of max frame");
    cr_assert_eq(get32(h), SM_DEFAULT_MAX_FRAME);
    long hwm = hwm_of(e.pid);
    cr_log_info("exactly max frame (16 MiB): server peak RSS %+ld KiB", (hwm - hwm0) >> 10);
    cr_assert_geq(hwm - hwm0, (long)SM_DEFAULT_MAX_FRAME, "the peak RSS measure is blind");
    close(fd);
    sm_close(c);
    free(junk);
    echo_stop(&e);
}

/* The in-process server: only the offending client goes, with SM_ETOOBIG. */

Test(server, header_ffffffff_closes_only_that_client, .timeout = 10)
{
    struct pair p;
    pair_up(&p, NULL, ECHO);
    sm_conn_id id;
    int fd = pair_raw(&p, &id);
    raw_write(fd, "\xff\xff\xff\xff", 4);
    expect_reason(&p, id, SM_ETOOBIG);
    int rc = raw_wait_closed(fd, WAIT_MS);
    cr_assert(rc == 0 || rc == -ECONNRESET, "the server did not close it: %s", sm_strerror(rc));
    good_still_served(&p);
    close(fd);
    pair_down(&p);
}

Test(server, max_frame_plus_one_closes_exactly_max_frame_passes, .timeout = 10)
{
    sm_server_options o = { .max_frame = 1000 };
    struct pair p;
    pair_up(&p, &o, ECHO);
    uint8_t msg[1001], got[1001];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7);
    /* Exactly max_frame, and empty, are accepted. */
    cr_assert_eq(sm_send(p.good, msg, 1000), 0);
    cr_assert_eq(sm_recv(p.good, got, sizeof got), 1000);
    cr_assert(memcmp(got, msg, 1000) == 0);
    cr_assert_eq(sm_send(p.good, msg, 0), 0);
    cr_assert_eq(sm_recv(p.good, got, sizeof got), 0);
    /* One more is not: announced alone, before any payload. */
    sm_conn_id id;
    int fd = pair_raw(&p, &id);
    uint8_t h[4];
    put32(h, 1001);
    raw_write(fd, h, 4);
    expect_reason(&p, id, SM_ETOOBIG);
    close(fd);
    /* Whole, from a blocking client. */
    sm_conn *big = client_to(p.v->addr);
    sm_conn_id big_id = ask_id(big);
    cr_assert_eq(sm_send(big, msg, 1001), 0);
    expect_reason(&p, big_id, SM_ETOOBIG);
    good_still_served(&p);
    sm_close(big);
    pair_down(&p);
}

/* ------------------------------------------------------------------ */
/* Truncated frames, resets                                            */
/* ------------------------------------------------------------------ */

/* Partial frames, 4 or 5 of them 4 MiB each, abandoned by 16 peers: their
 * buffers must go back.  Bound on RSS growth once they are gone: 12 MiB
 * (less than what the 4 MiB ones alone would hold if kept: 16-20 MiB). */
#define PARTIAL_BOUND (12 * MiB)
#define BIG_PARTIAL (4 * MiB)

Test(hostile, truncated_frames_then_close, .timeout = 30)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    uint8_t *buf = filled(4 + BIG_PARTIAL, 't');
    for (int i = 0; i < 16; i++) {
        /* half a header; a header alone; half a small frame; 4 MiB of an
         * 8 MiB frame: each then half-closed or closed */
        static const size_t sent[] = { 2, 4, 4 + 50, 4 + BIG_PARTIAL };
        static const uint32_t len[] = { 100, 100, 100, 2 * BIG_PARTIAL };
        int k = i % 4;
        int fd = raw_client(e.addr);
        put32(buf, len[k]);
        raw_write(fd, buf, sent[k]);
        sleep_ms(20); /* let the server take the partial frame */
        if (i < 8) {
            shutdown(fd, SHUT_WR);
            assert_closed_by_peer(fd, "truncated frame");
            close(fd);
        } else {
            close(fd);
        }
    }
    sleep_ms(100);
    server_ok(&e, rss0, PARTIAL_BOUND, "truncated frames");
    free(buf);
    echo_stop(&e);
}

Test(hostile, reset_mid_frame, .timeout = 30)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    uint8_t *buf = filled(4 + BIG_PARTIAL, 'r');
    for (int i = 0; i < 16; i++) {
        /* mid-header, mid small payload, mid 4 MiB payload; some with a
         * whole echo still unread on our side */
        static const size_t sent[] = { 3, 4 + 10, 4 + BIG_PARTIAL };
        int k = i % 3;
        int fd = raw_client(e.addr);
        if (i % 2) {
            uint8_t f[4 + 5] = { 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o' };
            raw_write(fd, f, sizeof f);
        }
        put32(buf, 2 * BIG_PARTIAL);
        raw_write(fd, buf, sent[k]);
        sleep_ms(20);
        reset_close(fd);
    }
    sleep_ms(100);
    server_ok(&e, rss0, PARTIAL_BOUND, "resets mid-frame");
    free(buf);
    echo_stop(&e);
}

/* The in-process server: SM_ETRUNCATED and -ECONNRESET, and only there. */

Test(server, truncated_frame_then_close_is_etruncated, .timeout = 10)
{
    struct pair p;
    pair_up(&p, NULL, ECHO);
    uint8_t buf[4 + 50];
    put32(buf, 100);
    memset(buf + 4, 't', 50);
    sm_conn_id id1, id2;
    int fd1 = pair_raw(&p, &id1);
    raw_write(fd1, buf, sizeof buf); /* header and half the payload */
    shutdown(fd1, SHUT_WR);
    expect_reason(&p, id1, SM_ETRUNCATED);
    int fd2 = pair_raw(&p, &id2);
    raw_write(fd2, buf, 2); /* half a header */
    sleep_ms(20);
    close(fd2);
    expect_reason(&p, id2, SM_ETRUNCATED);
    good_still_served(&p);
    close(fd1);
    pair_down(&p);
}

Test(server, reset_mid_frame_is_econnreset, .timeout = 10)
{
    struct pair p;
    pair_up(&p, NULL, ECHO);
    sm_conn_id id;
    int fd = pair_raw(&p, &id);
    uint8_t buf[4 + 10];
    put32(buf, 100);
    memset(buf + 4, 'r', 10);
    raw_write(fd, buf, sizeof buf);
    sleep_ms(50); /* let the server take the partial frame */
    struct linger lg = { 1, 0 };
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd); /* RST */
    expect_reason(&p, id, -ECONNRESET);
    good_still_served(&p);
    pair_down(&p);
}

/* ------------------------------------------------------------------ */
/* Random garbage                                                      */
/* ------------------------------------------------------------------ */

#define GARBAGE_CONNS 12
#define GARBAGE_LEN (640 * 1024) /* per connection: 7.5 MiB in all */
#define GARBAGE_BOUND ((UNDER_ASAN ? 16 : 8) * MiB)

/* Odd seeds: frames of random length (up to 64 KiB, now and then up to
 * 1 MiB) full of noise, every third an oversize header past half way, cut
 * at a random point.  Even seeds: noise. */
static const struct garbage_shape large_garbage = {
    .min_len = GARBAGE_LEN / 2,
    .len_spread = GARBAGE_LEN / 2,
    .frame_spread = 65536,
    .rare_every = 8,
    .rare_base = 0,
    .rare_spread = 1024 * 1024,
    .max_frame = SM_DEFAULT_MAX_FRAME,
    .forced_every = 3,
    .letters = 0,
};

/* Sends buf, reading back what the server echoes meanwhile, then
 * half-closes and waits for the server to close.  The echoes must be
 * exactly a prefix of the stream's whole frames: all of them when the
 * stream ends cleanly.  Returns the bytes echoed. */
static size_t garbage_exchange(const char *addr, const uint8_t *buf, size_t n, int want,
                               size_t whole, unsigned seed)
{
    int fd = raw_client(addr);
    static uint8_t in[65536];
    size_t sent = 0, echoed = 0;
    int wrote_eof = 0, write_failed = 0, closed = 0;
    int64_t end = now_ms() + 15000;
    while (!closed && now_ms() < end) {
        if (sent == n && !wrote_eof && !write_failed) {
            shutdown(fd, SHUT_WR);
            wrote_eof = 1;
        }
        struct pollfd p = { .fd = fd,
                            .events = POLLIN | (wrote_eof || write_failed ? 0 : POLLOUT) };
        if (poll(&p, 1, 50) <= 0)
            continue;
        if (p.revents & POLLOUT) {
            ssize_t k = send(fd, buf + sent, n - sent > 65536 ? 65536 : n - sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k > 0)
                sent += (size_t)k;
            else if (k < 0 && errno != EAGAIN && errno != EINTR)
                write_failed = errno;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = recv(fd, in, sizeof in, MSG_DONTWAIT);
            if (k > 0) {
                cr_assert_leq(echoed + (size_t)k, whole,
                              "seed %u: %zu bytes echoed, only %zu in whole frames", seed,
                              echoed + (size_t)k, whole);
                cr_assert(memcmp(in, buf + echoed, (size_t)k) == 0,
                          "seed %u: echo differs from the stream at %zu", seed, echoed);
                echoed += (size_t)k;
            } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
                closed = k == 0 ? 1 : -errno;
            }
        }
    }
    close(fd);
    cr_assert(closed == 1 || closed == -ECONNRESET, "seed %u: the server did not close (%d)", seed,
              closed);
    cr_assert(!write_failed || want == SM_ETOOBIG, "seed %u: write failed: %s", seed,
              strerror(write_failed));
    if (want == SM_ECLOSED)
        cr_assert_eq(echoed, whole, "seed %u: clean end, but %zu of %zu bytes echoed", seed, echoed,
                     whole);
    return echoed;
}

Test(hostile, random_garbage, .timeout = 40)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    uint8_t *buf = malloc(GARBAGE_LEN);
    cr_assert_not_null(buf);
    size_t total = 0, echoed = 0;
    int seen[3] = { 0 };
    for (unsigned seed = 0; seed < GARBAGE_CONNS; seed++) {
        size_t n = make_garbage(buf, GARBAGE_LEN, seed, &large_garbage), whole;
        int messages;
        int want = garbage_verdict(buf, n, SM_DEFAULT_MAX_FRAME, &messages, &whole);
        seen[want == SM_ETOOBIG ? 0 : want == SM_ETRUNCATED ? 1 : 2]++;
        total += n;
        echoed += garbage_exchange(e.addr, buf, n, want, whole, seed);
    }
    /* one more that ends between frames: every echo must come back */
    size_t n = 0;
    uint64_t x = 42;
    for (int k = 0; k < 40; k++) {
        uint32_t len = (uint32_t)(xorshift(&x) % 16000);
        put32(buf + n, len);
        for (uint32_t j = 0; j < len; j++)
            buf[n + 4 + j] = (uint8_t)xorshift(&x);
        n += 4 + len;
    }
    seen[2]++;
    total += n;
    echoed += garbage_exchange(e.addr, buf, n, SM_ECLOSED, n, 999);
    cr_log_info("garbage: %zu KiB over %d connections (%d too big, %d truncated, %d clean), "
                "%zu KiB echoed",
                total >> 10, GARBAGE_CONNS + 1, seen[0], seen[1], seen[2], echoed >> 10);
    cr_assert_gt(total, 4 * (size_t)MiB);
    cr_assert(seen[0] && seen[1] && seen[2], "the seeds cover every outcome");
    server_ok(&e, rss0, GARBAGE_BOUND, "random garbage");
    free(buf);
    echo_stop(&e);
}

#define GARBAGE_MAX_FRAME 1024u
#define SERVER_GARBAGE_CONNS 40

/* Odd seeds: plausible frames (letters only, so never a '#' command) with
 * now and then an oversized header, cut anywhere; even seeds: noise. */
static const struct garbage_shape small_garbage = {
    .min_len = 1,
    .len_spread = 4096,
    .frame_spread = 300,
    .rare_every = 10,
    .rare_base = GARBAGE_MAX_FRAME + 1,
    .rare_spread = 100000,
    .max_frame = GARBAGE_MAX_FRAME,
    .forced_every = 0,
    .letters = 1,
};

Test(server, garbage_closes_only_that_client_with_the_right_reason, .timeout = 15)
{
    sm_server_options o = { .max_frame = GARBAGE_MAX_FRAME };
    struct pair p;
    pair_up(&p, &o, 0); /* no echo: garbage clients never get data back */
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    uint8_t buf[4096];
    int seen[3] = { 0 };
    for (unsigned seed = 0; seed < SERVER_GARBAGE_CONNS; seed++) {
        size_t n;
        if (seed == 0) {
            n = sizeof http - 1;
            memcpy(buf, http, n);
        } else if (seed == 1) {
            /* whole frames only, ending between two: a clean close */
            static const uint32_t lens[] = { 3, 0, 700, GARBAGE_MAX_FRAME, 1 };
            n = 0;
            for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
                put32(buf + n, lens[k]);
                memset(buf + n + 4, 'q', lens[k]);
                n += 4 + lens[k];
            }
        } else {
            n = make_garbage(buf, sizeof buf, seed, &small_garbage);
        }
        int messages;
        int want = garbage_verdict(buf, n, GARBAGE_MAX_FRAME, &messages, NULL);
        seen[want == SM_ETOOBIG ? 0 : want == SM_ETRUNCATED ? 1 : 2]++;
        uint64_t before = atomic_load(&p.v->messages);
        sm_conn_id id;
        int fd = pair_raw(&p, &id);
        int rc = write_all(fd, buf, n);
        cr_assert(rc == 0 || want == SM_ETOOBIG, "seed %u: write: %s", seed, strerror(-rc));
        shutdown(fd, SHUT_WR);
        struct close_ev ev = { 0 };
        cr_assert(wait_closed(p.v, id, WAIT_MS, &ev), "seed %u: not closed", seed);
        cr_assert_eq(ev.reason, want, "seed %u (%zu bytes): reason %s, expected %s", seed, n,
                     sm_strerror(ev.reason), sm_strerror(want));
        cr_assert_eq(atomic_load(&p.v->messages) - before, (uint64_t)messages,
                     "seed %u: messages delivered before the error", seed);
        rc = raw_wait_closed(fd, WAIT_MS);
        cr_assert(rc == 0 || rc == -ECONNRESET, "seed %u: %s", seed, sm_strerror(rc));
        close(fd);
    }
    cr_log_info("garbage: %d too big, %d truncated, %d clean", seen[0], seen[1], seen[2]);
    cr_assert(seen[0] > 0 && seen[1] > 0 && seen[2] > 0, "the seeds cover every outcome");
    send_text(p.good, "#ping");
    expect_text(p.good, "pong");
    cr_assert_not(srv_closed(p.v, p.good_id, NULL));
    pair_down(&p);
}

/* ------------------------------------------------------------------ */
/* Idle and slow-drip peers                                            */
/* ------------------------------------------------------------------ */

#define IDLE_PEERS 500
#define DRIP_PEERS 40
#define DRIP_EVERY_MS 250
#define DRIP_MSG "drip-drop!" /* 10 bytes + 4 of header: 14 drips, 3.5 s */
#define BUSY_RTT_MS 100.0     /* a fresh client's connect + echo meanwhile */
/* 540 connections, well under 1 KiB each in the server, plus drip
 * partial frames of a few bytes: bound 4 MiB (8 MiB with ASan). */
#define IDLE_BOUND ((UNDER_ASAN ? 8 : 4) * MiB)

Test(hostile, idle_and_slow_drip_peers_do_not_delay_others, .timeout = 40)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    static int idle[IDLE_PEERS], drip[DRIP_PEERS];
    for (int i = 0; i < IDLE_PEERS; i++)
        idle[i] = raw_client(e.addr);
    uint8_t frame[4 + sizeof DRIP_MSG - 1];
    put32(frame, sizeof DRIP_MSG - 1);
    memcpy(frame + 4, DRIP_MSG, sizeof DRIP_MSG - 1);
    for (int i = 0; i < DRIP_PEERS; i++)
        drip[i] = raw_client(e.addr);

    static double rtt[1000];
    int trips = 0;
    size_t dripped = 0;
    int64_t next_drip = now_ms();
    int64_t end = now_ms() + 10000;
    while (dripped < sizeof frame && now_ms() < end) {
        if (now_ms() >= next_drip) {
            for (int i = 0; i < DRIP_PEERS; i++)
                raw_write(drip[i], frame + dripped, 1);
            dripped++;
            next_drip += DRIP_EVERY_MS;
        }
        if (trips < 1000)
            rtt[trips++] = fresh_echo(e.addr, 1e9, "");
        sleep_ms(20);
    }
    cr_assert_eq(dripped, sizeof frame, "the drip took too long");
    for (int i = 0; i < DRIP_PEERS; i++) {
        char got[32];
        ssize_t k = raw_recv_frame(drip[i], got, sizeof got, WAIT_MS);
        cr_assert_eq(k, (ssize_t)sizeof DRIP_MSG - 1, "drip peer %d: %s", i, sm_strerror((int)k));
        cr_assert(memcmp(got, DRIP_MSG, sizeof DRIP_MSG - 1) == 0);
    }
    long rss1 = rss_of(e.pid);
    qsort(rtt, (size_t)trips, sizeof rtt[0], cmp_double);
    double median = rtt[trips / 2], worst = rtt[trips - 1];
    cr_log_info("with %d idle and %d drip peers: %d fresh clients, connect+echo median %.2f ms, "
                "worst %.2f ms; server RSS %+ld KiB",
                IDLE_PEERS, DRIP_PEERS, trips, median, worst, (rss1 - rss0) >> 10);
    fprintf(stderr,
            "hostile: fresh client among %d idle + %d drip peers: median %.2f ms, "
            "worst %.2f ms (%d trips)\n",
            IDLE_PEERS, DRIP_PEERS, median, worst, trips);
    cr_assert_geq(trips, 50);
    cr_assert_lt(worst, BUSY_RTT_MS, "a fresh client waited %.1f ms among idle/drip peers", worst);
    cr_assert_lt(rss1 - rss0, IDLE_BOUND, "server RSS grew %ld KiB with %d peers (bound %ld KiB)",
                 (rss1 - rss0) >> 10, IDLE_PEERS + DRIP_PEERS, IDLE_BOUND >> 10);
    server_ok(&e, rss0, IDLE_BOUND, "idle and drip peers (still connected)");
    for (int i = 0; i < IDLE_PEERS; i++)
        close(idle[i]);
    for (int i = 0; i < DRIP_PEERS; i++)
        close(drip[i]);
    echo_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Peers that send and never read                                      */
/* ------------------------------------------------------------------ */

#define HOGS 12
#define HOG_FRAME (64 * 1024)
#define HOG_CAP (256 * MiB) /* per hog: reaching it means no backpressure */
#define HOG_STALL_MS 1000   /* no progress this long: the server stopped */
/* Backpressure keeps each hog's queue near high_water (1 MiB) plus one
 * read's worth: 12 hogs hold about 13-14 MiB (about 22 MiB under ASan).
 * Bound 32 MiB (48 MiB under ASan), while they offer more than 64 MiB (the
 * kernel's socket buffers take the rest).  Without backpressure each hog
 * could queue up to max_queue, 33 MiB, and would never be stopped. */
#define HOG_BOUND ((UNDER_ASAN ? 48 : 32) * MiB)
#define HOG_OFFER_MIN (64 * MiB)
#define HOG_RTT_MS 250.0 /* a well-behaved client while the hogs push */

Test(hostile, peers_that_never_read_are_paused_memory_bounded, .timeout = 60)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    uint8_t *frame = filled(4 + HOG_FRAME, 'h');
    put32(frame, HOG_FRAME);
    int fd[HOGS];
    size_t sent[HOGS] = { 0 };
    int64_t last[HOGS];
    for (int i = 0; i < HOGS; i++) {
        fd[i] = raw_client(e.addr);
        last[i] = now_ms();
    }
    sm_conn *good = client_to(e.addr);
    double worst = 0;
    int trips = 0, stalled = 0;
    int64_t t0 = now_ms(), end = t0 + 30000, next_echo = t0;
    while (now_ms() < end) {
        struct pollfd p[HOGS];
        for (int i = 0; i < HOGS; i++)
            p[i] = (struct pollfd){ .fd = fd[i], .events = POLLOUT };
        poll(p, HOGS, 10);
        int64_t now = now_ms();
        stalled = 0;
        for (int i = 0; i < HOGS; i++) {
            for (int k = 0; k < 16 && sent[i] < HOG_CAP; k++) {
                size_t off = sent[i] % (4 + HOG_FRAME);
                ssize_t n =
                    send(fd[i], frame + off, 4 + HOG_FRAME - off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n <= 0) {
                    cr_assert(n < 0 && (errno == EAGAIN || errno == EINTR), "hog %d: %s", i,
                              strerror(errno));
                    break;
                }
                sent[i] += (size_t)n;
                last[i] = now;
            }
            stalled += sent[i] < HOG_CAP && now - last[i] >= HOG_STALL_MS;
        }
        if (stalled == HOGS)
            break;
        if (now >= next_echo) {
            double rtt = echo_rtt(good);
            worst = rtt > worst ? rtt : worst;
            trips++;
            next_echo = now + 50;
        }
    }
    size_t total = 0, most = 0;
    for (int i = 0; i < HOGS; i++) {
        total += sent[i];
        most = sent[i] > most ? sent[i] : most;
    }
    long rss1 = rss_of(e.pid);
    long hwm = hwm_of(e.pid);
    cr_log_info("%d hogs offered %zu MiB in %" PRId64 " ms (most %zu MiB), %d stalled; "
                "server RSS %+ld KiB (peak %ld KiB); good client worst echo %.2f ms in %d",
                HOGS, total >> 20, now_ms() - t0, most >> 20, stalled, (rss1 - rss0) >> 10,
                hwm >> 10, worst, trips);
    fprintf(stderr,
            "hostile: %d never-reading hogs offered %zu MiB; server RSS grew %ld KiB; "
            "good client worst echo %.2f ms over %d trips\n",
            HOGS, total >> 20, (rss1 - rss0) >> 10, worst, trips);
    cr_assert_eq(stalled, HOGS, "only %d of %d hogs were stopped: no backpressure", stalled, HOGS);
    cr_assert_lt(most, (size_t)HOG_CAP, "the server read %zu MiB from one hog", most >> 20);
    cr_assert_gt(total, (size_t)HOG_OFFER_MIN, "the hogs offered only %zu MiB", total >> 20);
    cr_assert_lt(rss1 - rss0, HOG_BOUND, "server RSS grew %ld KiB under %d hogs (bound %ld KiB)",
                 (rss1 - rss0) >> 10, HOGS, HOG_BOUND >> 10);
    cr_assert_geq(trips, 5);
    cr_assert_lt(worst, HOG_RTT_MS, "the good client waited %.1f ms", worst);
    server_ok(&e, rss0, HOG_BOUND, "never-reading hogs (still connected)");
    for (int i = 0; i < HOGS; i++)
        close(fd[i]); /* unread echoes: a reset */
    sleep_ms(200);
    echo_rtt(good);
    sm_close(good);
    server_ok(&e, rss0, HOG_BOUND, "never-reading hogs (gone)");
    free(frame);
    echo_stop(&e);
}

/* The in-process server: a client that never reads is paused, not
 * dropped, while the others are served. */

#define SPAM_FRAME (64u * 1024u)
#define SPAM_LIMIT (64ull << 20)
#define SPAM_HIGH_WATER (64u * 1024u)

struct spam {
    int fd;
    int64_t deadline;
    uint64_t sent;
    int err;
    atomic_int done;
};

/* Sends 64 KiB echo requests without ever reading, until SPAM_LIMIT bytes
 * or the deadline. */
static void *spam_main(void *arg)
{
    struct spam *sp = arg;
    size_t frame = 4 + SPAM_FRAME, off = 0;
    uint8_t *buf = malloc(frame);
    sp->err = buf ? 0 : ENOMEM;
    if (buf) {
        put32(buf, SPAM_FRAME);
        memset(buf + 4, 'x', SPAM_FRAME);
    }
    while (!sp->err && sp->sent < SPAM_LIMIT && now_ms() < sp->deadline) {
        size_t k = offer(sp->fd, buf + off, frame - off, 20, &sp->err);
        sp->sent += k;
        off = (off + k) % frame;
    }
    free(buf);
    atomic_store(&sp->done, 1);
    return NULL;
}

Test(server, client_that_never_reads_is_paused_others_served, .timeout = 20)
{
    /* Backpressure keeps the hog's queue near high_water, far below this
     * max_queue: any SM_EFULL on an echo means the server kept reading. */
    sm_server_options o = { .high_water = SPAM_HIGH_WATER,
                            .max_queue = SPAM_HIGH_WATER + 4 * (SPAM_FRAME + 4) };
    struct srv *v = server_up(&o, ECHO);
    sm_conn *good = client_to(v->addr);
    sm_conn_id good_id = ask_id(good);
    ping(good);
    struct spam sp = { .fd = raw_client(v->addr), .deadline = now_ms() + 3000 };
    atomic_init(&sp.done, 0);
    cr_assert(wait_count(v, 0, 2, WAIT_MS));
    sm_conn_id hog_id = srv_open_id(v, 1, NULL);
    long rss0 = rss_bytes();
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, spam_main, &sp), 0);

    /* Meanwhile the well-behaved client keeps getting prompt echoes. */
    int trips = 0;
    int64_t worst = 0;
    while (!atomic_load(&sp.done) && trips < 1000) {
        char msg[64], got[64];
        snprintf(msg, sizeof msg, "good %d", trips);
        int64_t t0 = now_ms();
        ask(good, msg, got, sizeof got);
        int64_t took = now_ms() - t0;
        cr_assert_str_eq(got, msg);
        worst = took > worst ? took : worst;
        trips++;
        sleep_ms(20);
    }
    pthread_join(t, NULL);
    long rss1 = rss_bytes();
    cr_log_info("backpressure: hog sent %" PRIu64 " KiB in 3 s; RSS grew %ld KiB; "
                "worst echo %" PRId64 " ms over %d round trips",
                sp.sent >> 10, (rss1 - rss0) >> 10, worst, trips);
    cr_assert_eq(sp.err, 0, "hog: %s", strerror(sp.err));
    cr_assert_lt(sp.sent, SPAM_LIMIT, "the server read all %" PRIu64 " bytes: no backpressure",
                 sp.sent);
    cr_assert_gt(sp.sent, 4 * SPAM_FRAME, "the hog hardly sent anything");
    cr_assert_eq(atomic_load(&v->efull), 0, "%" PRIu64 " echoes hit max_queue",
                 (uint64_t)atomic_load(&v->efull));
    cr_assert_geq(trips, 10);
    cr_assert_lt(worst, 1000, "a well-behaved client waited %" PRId64 " ms", worst);
    /* AddressSanitizer keeps freed blocks in quarantine, so RSS says
     * little there; the SM_EFULL check above holds in every build. */
    long bound = UNDER_SANITIZER ? 256L << 20 : 16L << 20;
    cr_assert_lt(rss1 - rss0, bound, "RSS grew %ld KiB", (rss1 - rss0) >> 10);
    ping(good);
    cr_assert_not(srv_closed(v, hog_id, NULL), "the hog is paused, not dropped");
    cr_assert_not(srv_closed(v, good_id, NULL));
    close(sp.fd);
    sm_close(good);
    server_down(v);
}

/* ------------------------------------------------------------------ */
/* Connect and vanish                                                  */
/* ------------------------------------------------------------------ */

#define VANISH 3000
#define VANISH_BOUND (4 * MiB)

Test(hostile, thousands_connect_then_close, .timeout = 40)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    int fds0 = fd_count(e.pid);
    int64_t t0 = now_ms(), end = t0 + 20000;
    int done = 0;
    for (; done < VANISH && now_ms() < end; done++) {
        int fd = raw_client(e.addr);
        switch (done % 4) {
        case 0: close(fd); break;
        case 1: reset_close(fd); break;
        case 2: /* half a header */
            cr_assert_eq(send(fd, "\0\0", 2, MSG_NOSIGNAL), 2);
            close(fd);
            break;
        default: /* a message and half a header */
            cr_assert_eq(send(fd, "\0\0\0\1x\0\0", 7, MSG_NOSIGNAL), 7);
            reset_close(fd);
            break;
        }
    }
    int64_t took = now_ms() - t0;
    cr_assert_eq(done, VANISH, "only %d connect-and-close in 20 s", done);
    /* The fresh client queues behind all of them in the accept queue, so
     * its echo means every one was accepted... */
    server_ok(&e, rss0, VANISH_BOUND, "thousands of connect-then-close");
    /* ...and closed: the server's descriptors are back to what they were. */
    int fds = -1;
    for (int64_t stop = now_ms() + WAIT_MS; now_ms() < stop; sleep_ms(20))
        if ((fds = fd_count(e.pid)) <= fds0)
            break;
    cr_log_info("%d connect-then-close in %" PRId64 " ms; server fds %d -> %d", VANISH, took, fds0,
                fds);
    cr_assert_leq(fds, fds0, "the server holds %d descriptors, %d before", fds, fds0);
    echo_stop(&e);
}

/* The blocking API: 500 accepted connections whose peers vanish in the
 * same ways; each receive reports it and nothing leaks. */
Test(hostile, accepted_connections_that_vanish_leak_nothing, .timeout = 30)
{
    sm_options o = { .accept_timeout_ms = WAIT_MS, .recv_timeout_ms = WAIT_MS };
    sm_listener *l;
    char addr[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), 0, "%s", sm_last_error());
    cr_assert_gt(sm_listener_addr(l, addr, sizeof addr), 0);
    int fds0 = fd_count(getpid());
    for (int i = 0; i < 500; i++) {
        int fd = raw_client(addr);
        int kind = i % 4;
        if (kind == 2)
            raw_write(fd, "\0\0", 2);
        if (kind == 3)
            raw_write(fd, "\0\0\0\5x", 5);
        if (kind % 2)
            reset_close(fd);
        else
            close(fd);
        sm_conn *c;
        cr_assert_eq(sm_accept(l, &c), 0, "%s", sm_last_error());
        char buf[16];
        ssize_t rc = sm_recv(c, buf, sizeof buf);
        int ok = kind == 0   ? rc == SM_ECLOSED
                 : kind == 2 ? rc == SM_ETRUNCATED
                             : rc == -ECONNRESET || rc == SM_ETRUNCATED || rc == SM_ECLOSED;
        cr_assert(ok, "peer %d (kind %d): %s", i, kind, sm_strerror((int)rc));
        sm_close(c);
    }
    cr_assert_eq(fd_count(getpid()), fds0, "descriptors leaked");
    sm_listener_close(l);
}

/* ------------------------------------------------------------------ */
/* Out of descriptors                                                  */
/* ------------------------------------------------------------------ */

#define FD_CLIENTS 80 /* more than either server can hold */

/* Waits up to total_ms for "hello <i>" echoes on clients not yet served;
 * with quiet_ms, stops that long after the last one.  Returns how many
 * came, or -1 after a wrong or failed reply (why in fail).  Non-asserting:
 * the server suite's case must reap its child whatever happens. */
static int collect_echoes(int *fds, int *served, int total_ms, int quiet_ms, char *fail, size_t cap)
{
    struct pollfd p[FD_CLIENTS];
    int map[FD_CLIENTS], got = 0;
    int64_t end = now_ms() + total_ms, last = now_ms();
    while (now_ms() < end) {
        int k = 0;
        for (int i = 0; i < FD_CLIENTS; i++)
            if (!served[i] && fds[i] >= 0) {
                p[k] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
                map[k++] = i;
            }
        if (k == 0)
            break;
        poll(p, (nfds_t)k, 50);
        for (int j = 0; j < k; j++) {
            if (!p[j].revents)
                continue;
            int i = map[j];
            char buf[64], want[64];
            ssize_t n = raw_recv_frame(fds[i], buf, sizeof buf - 1, 2000);
            if (n < 0) {
                snprintf(fail, cap, "client %d: %s", i, sm_strerror((int)n));
                return -1;
            }
            buf[n] = '\0';
            snprintf(want, sizeof want, "hello %d", i);
            if (strcmp(buf, want) != 0) {
                snprintf(fail, cap, "client %d got '%s'", i, buf);
                return -1;
            }
            served[i] = 1;
            got++;
            last = now_ms();
        }
        if (quiet_ms && got > 0 && now_ms() - last > quiet_ms)
            break;
    }
    return got;
}

/* The echo-server with a low RLIMIT_NOFILE. */

#define FD_LIMIT 48   /* the server's RLIMIT_NOFILE */
#define FD_CPU_MS 150 /* its CPU in 1 s of being full: it must idle */
#define FD_BOUND (4 * MiB)

/* collect_echoes, failing the test on a wrong or failed reply. */
static int count_echoes(int *fds, int *served, int total_ms, int quiet_ms)
{
    char fail[256] = "";
    int got = collect_echoes(fds, served, total_ms, quiet_ms, fail, sizeof fail);
    cr_assert_geq(got, 0, "%s", fail);
    return got;
}

Test(hostile, out_of_descriptors_pauses_without_spinning, .timeout = 40)
{
    struct echo e;
    long rss0 = echo_up(&e, FD_LIMIT);
    int fds[FD_CLIENTS], served[FD_CLIENTS] = { 0 };
    for (int i = 0; i < FD_CLIENTS; i++) {
        fds[i] = raw_client(e.addr); /* the kernel completes them into the backlog */
        char msg[32];
        int n = snprintf(msg, sizeof msg, "hello %d", i);
        cr_assert_eq(raw_send_frame(fds[i], msg, (size_t)n), 0);
    }
    int first = count_echoes(fds, served, 5000, 700);
    int waiting = FD_CLIENTS - first;
    cr_assert(first > 10 && waiting > 10, "%d served, %d waiting: the limit did not bite", first,
              waiting);
    /* Full, with clients waiting: the server must idle. */
    long cpu0 = cpu_ms(e.pid);
    sleep_ms(1000);
    long cpu = cpu_ms(e.pid) - cpu0;
    int late = count_echoes(fds, served, 1, 1000);
    cr_log_info("fd limit %d: %d served, %d waiting; server CPU %ld ms in 1 s while full", FD_LIMIT,
                first, waiting, cpu);
    fprintf(stderr, "hostile: out of fds: %d served, %d waiting, server CPU %ld ms in 1 s\n", first,
            waiting, cpu);
    cr_assert_lt(cpu, FD_CPU_MS, "the server spun: %ld ms of CPU in 1 s while full", cpu);
    cr_assert_eq(late, 0, "%d clients served while no descriptor was free", late);
    /* Served clients leave, a few rounds: every waiting client is served. */
    int rest = 0;
    for (int round = 0; round < 5 && rest < waiting; round++) {
        for (int i = 0; i < FD_CLIENTS; i++)
            if (served[i] && fds[i] >= 0) {
                close(fds[i]);
                fds[i] = -1;
            }
        rest += count_echoes(fds, served, 5000, 1000);
    }
    cr_assert_eq(rest, waiting, "once served clients left, %d of %d waiting clients were served",
                 rest, waiting);
    for (int i = 0; i < FD_CLIENTS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    sleep_ms(100);
    server_ok(&e, rss0, FD_BOUND, "running out of descriptors");
    echo_stop(&e);
}

/* The in-process server, in a forked child with a low RLIMIT_NOFILE. */

#define FD_FREE 54 /* descriptors left: the server's 3 and about 51 clients */
#define FD_CPU_LIMIT_US 500000L

/* This process's CPU time, from getrusage: under the low descriptor
 * limit there may be none free to open /proc with. */
static long cpu_us(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (long)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000L + r.ru_utime.tv_usec +
           r.ru_stime.tv_usec;
}

/* Between the parent's "measure" and "stop": the CPU time this process
 * used in one second, reported over rep.  0, or the child's exit code. */
static int measure_when_told(int cmd, int rep, long *cpu)
{
    char line[64];
    if (read_line(cmd, line, sizeof line, 15000) < 0 || strcmp(line, "measure") != 0)
        return 12;
    long c0 = cpu_us();
    sleep_ms(1000);
    *cpu = cpu_us() - c0;
    put_line(rep, "cpu %ld\n", *cpu);
    if (read_line(cmd, line, sizeof line, 15000) < 0 || strcmp(line, "stop") != 0)
        return 13;
    return 0;
}

/* The child: a server under a low descriptor limit.  Reports over rep and
 * exits 0 only if it paused accepting and used little CPU meanwhile. */
static int fd_child(int cmd, int rep)
{
    int top;
    rlim_t lim = limit_leaving(FD_FREE, &top);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 10;
    rl.rlim_cur = lim;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 10;
    struct srv *v;
    if (srv_open(&v, NULL, ECHO) != 0 || srv_start(v) != 0)
        return 11;
    put_line(rep, "addr %s limit %ld top %d\n", v->addr, (long)lim, top);
    long cpu = -1;
    int code = measure_when_told(cmd, rep, &cpu);
    if (srv_halt(v, WAIT_MS) != 0)
        return 14;
    sm_server_stats st;
    sm_server_get_stats(v->s, &st);
    put_line(rep, "pauses %" PRIu64 " accepted %" PRIu64 "\n", st.accept_pauses, st.accepted);
    int problem = v->problem[0] != '\0';
    srv_destroy(v);
    if (code)
        return code;
    if (problem)
        return 15;
    if (st.accept_pauses == 0)
        return 16;
    if (cpu >= FD_CPU_LIMIT_US)
        return 17;
    return 0;
}

struct fd_report {
    long limit, cpu;
    int top, first, waited;
    uint64_t pauses, accepted;
};

static void fd_parent(int cmd, int rep, int *fds, struct fd_report *r, char *fail, size_t cap)
{
    char line[256], addr[SM_ADDRSTRLEN];
    int served[FD_CLIENTS] = { 0 };
    if (read_line(rep, line, sizeof line, WAIT_MS) < 0 ||
        sscanf(line, "addr %127s limit %ld top %d", addr, &r->limit, &r->top) != 3)
        FAIL("no address from the child");
    /* All connect: the kernel completes them into the listen backlog. */
    for (int i = 0; i < FD_CLIENTS; i++) {
        fds[i] = raw_connect(addr);
        if (fds[i] < 0)
            FAIL("connect %d: %s", i, strerror(-fds[i]));
        char msg[32];
        int n = snprintf(msg, sizeof msg, "hello %d", i);
        if (raw_send_frame(fds[i], msg, (size_t)n) != 0)
            FAIL("send %d", i);
    }
    int first = collect_echoes(fds, served, 3000, 500, fail, cap);
    if (first < 0)
        return;
    r->first = first;
    r->waited = FD_CLIENTS - first;
    if (first == 0 || r->waited == 0)
        FAIL("%d of %d served under a limit of %ld: the limit did not bite", first, FD_CLIENTS,
             r->limit);
    if (first < r->waited + 5)
        FAIL("only %d served, %d waiting: too few to free room for them", first, r->waited);

    /* Out of descriptors, with clients waiting: the server must idle. */
    if (put_line(cmd, "measure\n") < 0 || read_line(rep, line, sizeof line, WAIT_MS) < 0 ||
        sscanf(line, "cpu %ld", &r->cpu) != 1)
        FAIL("no CPU figure from the child");
    int late = collect_echoes(fds, served, 1, 0, fail, cap);
    if (late != 0)
        FAIL("%d clients were served while no descriptor was free", late);

    /* Some leave; every waiting client is then served. */
    int closed = 0;
    for (int i = 0; i < FD_CLIENTS && closed < r->waited + 5; i++)
        if (served[i]) {
            close(fds[i]);
            fds[i] = -1;
            closed++;
        }
    int rest = collect_echoes(fds, served, 8000, 0, fail, cap);
    if (rest < 0)
        return;
    if (rest != r->waited)
        FAIL("after %d clients left, %d of %d waiting clients were served", closed, rest,
             r->waited);
    if (put_line(cmd, "stop\n") < 0 || read_line(rep, line, sizeof line, WAIT_MS) < 0 ||
        sscanf(line, "pauses %" SCNu64 " accepted %" SCNu64, &r->pauses, &r->accepted) != 2)
        FAIL("no stats from the child");
    if (r->accepted != FD_CLIENTS)
        FAIL("accepted %" PRIu64 " of %d", r->accepted, FD_CLIENTS);
}

Test(server, out_of_descriptors_pauses_accepting_without_spinning, .timeout = 20)
{
    int cmd, rep, fds[FD_CLIENTS], status;
    for (int i = 0; i < FD_CLIENTS; i++)
        fds[i] = -1;
    pid_t pid = fork_child(&cmd, &rep, fd_child);
    char fail[256] = "";
    struct fd_report r = { 0 };
    fd_parent(cmd, rep, fds, &r, fail, sizeof fail);
    for (int i = 0; i < FD_CLIENTS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    close(cmd); /* a child still waiting for a command gives up */
    int exited = reap(pid, 10000, &status);
    close(rep);
    cr_log_info("fd exhaustion: limit %ld (%d already open); %d served at once, %d waited; "
                "CPU %ld us in 1 s while paused; %" PRIu64 " accept pauses",
                r.limit, r.top, r.first, r.waited, r.cpu, r.pauses);
    cr_assert(fail[0] == '\0', "%s", fail);
    cr_assert(exited, "the child did not exit");
    cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
    cr_assert_lt(r.cpu, FD_CPU_LIMIT_US, "the server spun: %ld us of CPU in 1 s", r.cpu);
    cr_assert_gt(r.pauses, 0);
    cr_assert_eq(WEXITSTATUS(status), 0, "the child failed with status %d", WEXITSTATUS(status));
}

/* ------------------------------------------------------------------ */
/* SIGPIPE                                                             */
/* ------------------------------------------------------------------ */

/* SIGPIPE must be at its default (deadly) action, so a library that
 * raised it would kill the process: we never ignore it ourselves. */
static void sigpipe_deadly(void)
{
    struct sigaction sa = { .sa_handler = SIG_DFL };
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGPIPE, &sa, NULL), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    cr_assert_eq(sigprocmask(SIG_UNBLOCK, &set, NULL), 0);
}

#define VANISH_MSG (4 * MiB)

/* The peer of a large send: reads 64 KiB, then resets. */
static void *read_a_little_then_reset(void *arg)
{
    int fd = *(int *)arg;
    static char tmp[65536];
    size_t got = 0;
    set_io_timeout(fd, WAIT_MS);
    while (got < sizeof tmp) {
        ssize_t n = recv(fd, tmp + got, sizeof tmp - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    reset_close(fd);
    return NULL;
}

Test(hostile, server_survives_clients_vanishing_while_it_writes, .timeout = 40)
{
    struct echo e;
    long rss0 = echo_up(&e, 0);
    uint8_t *msg = filled(4 + VANISH_MSG, 'v');
    put32(msg, VANISH_MSG);
    for (int i = 0; i < 24; i++) {
        int fd = raw_client(e.addr);
        /* Two 4 MiB requests: the server is writing 8 MiB of echoes when
         * the client goes (the echo is far larger than the socket buffers). */
        raw_write(fd, msg, 4 + VANISH_MSG);
        raw_write(fd, msg, 4 + VANISH_MSG);
        uint8_t h[4];
        cr_assert_eq(read_exact(fd, h, 4, now_ms() + WAIT_MS), 0, "no echo started");
        switch (i % 3) {
        case 0: close(fd); break; /* unread data: a reset */
        case 1: reset_close(fd); break;
        default:
            shutdown(fd, SHUT_WR);
            sleep_ms(5);
            close(fd);
            break; /* FIN, then reset */
        }
        sleep_ms(10);
        assert_alive(&e, "a client vanished while it was written to");
    }
    sleep_ms(100);
    server_ok(&e, rss0, 16 * MiB, "clients vanishing mid-write");
    free(msg);
    echo_stop(&e);
}

/* sm_send (and sm_flush, sm_close with held frames) to a peer that is
 * gone, in this process, from both ends of the blocking API. */
Test(hostile, sm_send_to_vanished_peer_fails_without_sigpipe, .timeout = 30)
{
    sigpipe_deadly();
    char addr[SM_ADDRSTRLEN];
    int lfd = raw_listener(addr);
    size_t big = 1 * MiB;
    uint8_t *msg = calloc(1, big);
    cr_assert_not_null(msg);
    sm_options o = { .connect_timeout_ms = WAIT_MS,
                     .send_timeout_ms = WAIT_MS,
                     .recv_timeout_ms = WAIT_MS,
                     .accept_timeout_ms = WAIT_MS };
    for (int i = 0; i < 6; i++) {
        sm_conn *c;
        cr_assert_eq(sm_connect_opts(&c, addr, &o), 0, "%s", sm_last_error());
        int peer = raw_accept(lfd);
        if (i % 2)
            reset_close(peer);
        else
            close(peer);
        sleep_ms(20);
        int rc = 0, k;
        for (k = 0; k < 64 && rc == 0; k++) {
            if (i >= 4) {
                rc = sm_send_flags(c, msg, 100, SM_MORE);
                if (rc == 0)
                    rc = sm_flush(c);
            } else {
                rc = sm_send(c, msg, (size_t)(i < 2 ? 100 : big));
            }
            if (rc == 0)
                sleep_ms(1);
        }
        cr_assert(rc == -EPIPE || rc == -ECONNRESET, "case %d: send %d returned %s", i, k,
                  sm_strerror(rc));
        /* sticky, still no signal */
        rc = sm_send(c, msg, 10);
        cr_assert(rc == -EPIPE || rc == -ECONNRESET, "case %d: again %s", i, sm_strerror(rc));
        sm_close(c);
    }
    /* held frames written by sm_close to a gone peer: no signal either */
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0);
    int peer = raw_accept(lfd);
    reset_close(peer);
    sleep_ms(20);
    cr_assert_eq(sm_send_flags(c, msg, 100, SM_MORE), 0);
    sm_close(c);

    /* A large message cut off mid-write: the peer reads 64 KiB and goes. */
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0);
    peer = raw_accept(lfd);
    size_t huge = 16 * MiB;
    uint8_t *h = calloc(1, huge);
    cr_assert_not_null(h);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_a_little_then_reset, &peer), 0);
    int rc = sm_send(c, h, huge);
    pthread_join(t, NULL);
    cr_assert(rc == -EPIPE || rc == -ECONNRESET, "16 MiB send to a vanishing peer: %s",
              sm_strerror(rc));
    sm_close(c);
    free(h);

    /* The accepting side: sm_send from an accepted conn to a gone client. */
    close(lfd);
    sm_listener *l;
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), 0);
    cr_assert_gt(sm_listener_addr(l, addr, sizeof addr), 0);
    for (int i = 0; i < 2; i++) {
        int fd = raw_client(addr);
        sm_conn *a;
        cr_assert_eq(sm_accept(l, &a), 0, "%s", sm_last_error());
        if (i)
            reset_close(fd);
        else
            close(fd);
        sleep_ms(20);
        int k;
        rc = 0;
        for (k = 0; k < 64 && rc == 0; k++)
            rc = sm_send(a, msg, big);
        cr_assert(rc == -EPIPE || rc == -ECONNRESET, "accepted: send %d: %s", k, sm_strerror(rc));
        sm_close(a);
    }
    /* Still here, and still a working client. */
    int fd = raw_client(addr);
    sm_conn *a;
    cr_assert_eq(sm_accept(l, &a), 0);
    cr_assert_eq(sm_send(a, "ok", 2), 0);
    char got[4];
    cr_assert_eq(raw_recv_frame(fd, got, sizeof got, WAIT_MS), 2);
    close(fd);
    sm_close(a);
    sm_listener_close(l);
    free(msg);
}

/* ------------------------------------------------------------------ */
/* The blocking API as the receiver of hostile streams                 */
/* ------------------------------------------------------------------ */

enum recv_kind { RECV, RECV_ALLOC, RECV_VIEW };
static const char *const recv_name[] = { "sm_recv", "sm_recv_alloc", "sm_recv_view" };

/* One receive of the given kind; the result, and the payload (if any) in
 * out (cap bytes; sm_recv fails with SM_EMSGSIZE beyond). */
static ssize_t recv_one(sm_conn *c, enum recv_kind kind, uint8_t *out, size_t cap)
{
    if (kind == RECV)
        return sm_recv(c, out, cap);
    void *alloc = (void *)1;
    const void *view = (void *)1;
    ssize_t n = kind == RECV_ALLOC ? sm_recv_alloc(c, &alloc) : sm_recv_view(c, &view);
    const void *msg = kind == RECV_ALLOC ? alloc : view;
    if (n < 0) {
        cr_assert_null(msg, "%s: no message, yet *msg is set", recv_name[kind]);
        return n;
    }
    if ((size_t)n <= cap)
        memcpy(out, msg, (size_t)n);
    if (kind == RECV_ALLOC)
        free(alloc);
    return n;
}

/* The raw server's part: what it sends, then how it ends. */
struct script {
    const uint8_t *data;
    size_t len;
    int end; /* 0 close, 1 reset, 2 keep open until the client closes */
};

/* A client connects to a raw server that plays the script; the receive
 * must fail with want, promptly (well before the recv timeout), after
 * `ok` whole messages. */
static void client_case(const struct script *s, enum recv_kind kind, int ok, int want,
                        const char *what)
{
    char addr[SM_ADDRSTRLEN];
    int lfd = raw_listener(addr);
    sm_options o = { .connect_timeout_ms = WAIT_MS,
                     .recv_timeout_ms = WAIT_MS,
                     .send_timeout_ms = WAIT_MS };
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0, "%s", sm_last_error());
    int fd = raw_accept(lfd);
    close(lfd);
    set_io_timeout(fd, WAIT_MS);
    write_all(fd, s->data, s->len);
    if (s->end == 0)
        close(fd);
    else if (s->end == 1)
        reset_close(fd);
    static uint8_t out[256 * 1024];
    int64_t t0 = now_ms();
    ssize_t n;
    for (int i = 0; i < ok; i++) {
        n = recv_one(c, kind, out, sizeof out);
        cr_assert_geq(n, 0, "%s, %s: message %d: %s", what, recv_name[kind], i,
                      sm_strerror((int)n));
    }
    n = recv_one(c, kind, out, sizeof out);
    int64_t took = now_ms() - t0;
    cr_assert_eq(n, want, "%s, %s: got %zd (%s), expected %s", what, recv_name[kind], n,
                 n < 0 ? sm_strerror((int)n) : "a message", sm_strerror(want));
    cr_assert_lt(took, 1000, "%s, %s: took %" PRId64 " ms", what, recv_name[kind], took);
    /* the failure sticks */
    n = recv_one(c, kind, out, sizeof out);
    cr_assert_eq(n, want, "%s, %s: second call %s", what, recv_name[kind], sm_strerror((int)n));
    sm_close(c);
    if (s->end == 2)
        close(fd);
}

Test(hostile, client_recv_reports_oversize_header_and_truncation, .timeout = 30)
{
    static uint8_t buf[4 + 200000 + 4 + 100];
    struct script s;
    for (int kind = RECV; kind <= RECV_VIEW; kind++) {
        /* oversize headers, the server staying connected: SM_ETOOBIG at
         * once, with nothing allocated (sm_recv_alloc of 4 GiB would fail
         * with SM_ENOMEM or take seconds) */
        put32(buf, 0xFFFFFFFFu);
        s = (struct script){ buf, 4, 2 };
        client_case(&s, kind, 0, SM_ETOOBIG, "header 0xFFFFFFFF");
        put32(buf, SM_DEFAULT_MAX_FRAME + 1);
        memset(buf + 4, 'p', 1000);
        s = (struct script){ buf, 4 + 1000, 2 };
        client_case(&s, kind, 0, SM_ETOOBIG, "header max frame + 1");
        /* after a good message */
        put32(buf, 3);
        memcpy(buf + 4, "abc", 3);
        put32(buf + 7, 0x80000000u);
        s = (struct script){ buf, 11, 2 };
        client_case(&s, kind, 1, SM_ETOOBIG, "message then header 2^31");

        /* closed (or reset) mid-frame */
        put32(buf, 100);
        memset(buf + 4, 'x', 100);
        s = (struct script){ buf, 2, 0 };
        client_case(&s, kind, 0, SM_ETRUNCATED, "close mid-header");
        s = (struct script){ buf, 4, 0 };
        client_case(&s, kind, 0, SM_ETRUNCATED, "close after a header");
        s = (struct script){ buf, 4 + 50, 0 };
        client_case(&s, kind, 0, SM_ETRUNCATED, "close mid small payload");
        put32(buf, 200000); /* larger than SM_RECV_BUFFER: the direct path */
        memset(buf + 4, 'y', 200000);
        s = (struct script){ buf, 4 + 150000, 0 };
        client_case(&s, kind, 0, SM_ETRUNCATED, "close mid large payload");
        put32(buf + 4 + 200000, 100);
        s = (struct script){ buf, 4 + 200000 + 4 + 10, 0 };
        client_case(&s, kind, 1, SM_ETRUNCATED, "large message then close mid frame");
        put32(buf, 100);
        s = (struct script){ buf, 4 + 50, 1 };
        client_case(&s, kind, 0, -ECONNRESET, "reset mid payload");
    }
}

/* The accepting side: hostile clients of an sm_accept'ed connection, then a
 * fresh well-behaved client is served promptly. */

struct feeder {
    char addr[SM_ADDRSTRLEN];
    const uint8_t *data;
    size_t len;
    int reset;
    int fd;
};

/* Connects, writes the stream (bounded), then half-closes or resets. */
static void *feeder_main(void *arg)
{
    struct feeder *f = arg;
    int fd = f->fd;
    set_io_timeout(fd, WAIT_MS);
    write_all(fd, f->data, f->len);
    if (f->reset)
        reset_close(fd);
    else
        shutdown(fd, SHUT_WR);
    return NULL;
}

static void fresh_blocking_client(sm_listener *l, const char *addr)
{
    double t0 = now_ms_f();
    sm_options o = { .connect_timeout_ms = WAIT_MS,
                     .recv_timeout_ms = WAIT_MS,
                     .send_timeout_ms = WAIT_MS };
    sm_conn *c, *a;
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0);
    cr_assert_eq(sm_accept(l, &a), 0, "%s", sm_last_error());
    cr_assert_eq(sm_send(c, "fresh", 5), 0);
    char buf[8];
    cr_assert_eq(sm_recv(a, buf, sizeof buf), 5);
    cr_assert_eq(sm_send(a, buf, 5), 0);
    cr_assert_eq(sm_recv(c, buf, sizeof buf), 5);
    double took = now_ms_f() - t0;
    cr_assert_lt(took, FRESH_MS, "a fresh client waited %.1f ms", took);
    sm_close(a);
    sm_close(c);
}

Test(hostile, accepted_conn_reports_hostile_streams, .timeout = 40)
{
    sm_options o = { .accept_timeout_ms = WAIT_MS,
                     .recv_timeout_ms = WAIT_MS,
                     .send_timeout_ms = WAIT_MS };
    sm_listener *l;
    char addr[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), 0, "%s", sm_last_error());
    cr_assert_gt(sm_listener_addr(l, addr, sizeof addr), 0);
    uint8_t *buf = malloc(GARBAGE_LEN);
    cr_assert_not_null(buf);
    long rss0 = rss_of(getpid());
    size_t total = 0;
    for (unsigned seed = 0; seed < GARBAGE_CONNS + 4; seed++) {
        size_t n, whole;
        int reset = 0;
        int messages, want;
        if (seed < GARBAGE_CONNS) {
            n = make_garbage(buf, GARBAGE_LEN, seed, &large_garbage);
            want = garbage_verdict(buf, n, SM_DEFAULT_MAX_FRAME, &messages, &whole);
        } else {
            /* 4 GiB and max+1 headers pushing payload; reset mid-frame;
             * several MiB of whole frames then a clean end */
            int k = (int)(seed - GARBAGE_CONNS);
            memset(buf, 'z', GARBAGE_LEN);
            n = GARBAGE_LEN;
            put32(buf, k == 0 ? 0xFFFFFFFFu : k == 1 ? SM_DEFAULT_MAX_FRAME + 1 : 500000);
            if (k == 3) {
                for (size_t off = 0; off + 4 + 60000 <= GARBAGE_LEN; off += 4 + 60000) {
                    put32(buf + off, 60000);
                    n = off + 4 + 60000;
                }
            }
            want = garbage_verdict(buf, n, SM_DEFAULT_MAX_FRAME, &messages, &whole);
            if (k == 2) {
                n = 100000;
                reset = 1;
                want = -ECONNRESET;
                messages = 0;
            }
        }
        total += n;
        struct feeder f = { .data = buf, .len = n, .reset = reset };
        strcpy(f.addr, addr);
        f.fd = raw_client(addr);
        sm_conn *a;
        cr_assert_eq(sm_accept(l, &a), 0, "%s", sm_last_error());
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, feeder_main, &f), 0);
        if (reset) {
            pthread_join(t, NULL);
            sleep_ms(20);
        }
        enum recv_kind kind = (enum recv_kind)(seed % 3);
        ssize_t rc;
        size_t off = 0;
        int got = 0;
        static uint8_t out[SM_DEFAULT_MAX_FRAME];
        int64_t t0 = now_ms();
        while ((rc = recv_one(a, kind, out, sizeof out)) >= 0 && got <= messages) {
            cr_assert(off + 4 + (size_t)rc <= n && get32(buf + off) == (uint32_t)rc &&
                          memcmp(out, buf + off + 4, (size_t)rc) == 0,
                      "seed %u: message %d differs from the stream", seed, got);
            off += 4 + (size_t)rc;
            got++;
        }
        int64_t took = now_ms() - t0;
        sm_close(a); /* a feeder blocked in send gets a reset */
        if (!reset)
            pthread_join(t, NULL);
        close(f.fd);
        cr_assert_eq(rc, want, "seed %u, %s: %s, expected %s", seed, recv_name[kind],
                     sm_strerror((int)rc), sm_strerror(want));
        cr_assert_eq(got, messages, "seed %u: %d messages, expected %d", seed, got, messages);
        cr_assert_lt(took, 3000, "seed %u: %" PRId64 " ms", seed, took);
        fresh_blocking_client(l, addr);
    }
    long rss = rss_of(getpid());
    cr_log_info("blocking receiver: %zu KiB of hostile streams; RSS %+ld KiB", total >> 10,
                (rss - rss0) >> 10);
    /* No allocation for announced sizes, buffers freed with each conn:
     * bound 32 MiB on this process's growth (the receive buffer above is
     * 16 MiB of it once touched). */
    cr_assert_lt(rss - rss0, 32 * MiB, "RSS grew %ld KiB", (rss - rss0) >> 10);
    free(buf);
    sm_listener_close(l);
}
