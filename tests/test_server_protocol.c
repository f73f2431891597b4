/*
 * The event-driven server and the protocol: how a connection ends (clean
 * close between frames), frames split and coalesced anywhere, and argument
 * errors.  The hostile cases (oversize headers, truncation, resets,
 * garbage) are in test_hostile.c.  Suite "server".
 */
#include "support/support.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* How a connection ends, how frames arrive                            */
/* ------------------------------------------------------------------ */

Test(server, clean_close_between_frames_is_eclosed, .timeout = 10)
{
    struct pair p;
    pair_up(&p, NULL, ECHO);
    /* A blocking client that leaves after two round trips. */
    sm_conn *c = client_to(p.v->addr);
    sm_conn_id cid = ask_id(c);
    send_text(c, "one");
    expect_text(c, "one");
    sm_close(c);
    expect_reason(&p, cid, SM_ECLOSED);
    /* A raw one that half-closes: the server closes its side too. */
    sm_conn_id id;
    int fd = pair_raw(&p, &id);
    cr_assert_eq(raw_send_frame(fd, "two", 3), 0);
    char got[8];
    cr_assert_eq(raw_recv_frame(fd, got, sizeof got, WAIT_MS), 3);
    cr_assert(memcmp(got, "two", 3) == 0);
    shutdown(fd, SHUT_WR);
    expect_reason(&p, id, SM_ECLOSED);
    cr_assert_eq(raw_wait_closed(fd, WAIT_MS), 0, "the server did not close its side");
    good_still_served(&p);
    close(fd);
    pair_down(&p);
}

Test(server, frames_split_and_coalesced_anywhere, .timeout = 10)
{
    struct pair p;
    pair_up(&p, NULL, ECHO);
    sm_conn_id id;
    int fd = pair_raw(&p, &id);
    uint8_t a[4 + 5], b[4 + 300], c[4 + 7], e[4];
    put32(a, 5);
    memcpy(a + 4, "alpha", 5);
    put32(b, 300);
    for (int i = 0; i < 300; i++)
        b[4 + i] = (uint8_t)(i * 13 + 1);
    put32(c, 7);
    memcpy(c + 4, "charlie", 7);
    put32(e, 0);
    /* a whole and the start of b in one write */
    uint8_t first[sizeof a + 10];
    memcpy(first, a, sizeof a);
    memcpy(first + sizeof a, b, 10);
    raw_write(fd, first, sizeof first);
    /* b's next bytes one at a time, then the rest in chunks */
    size_t off = 10;
    for (; off < 40; off++) {
        raw_write(fd, b + off, 1);
        sleep_ms(1);
    }
    for (; off < sizeof b; off += 29) {
        raw_write(fd, b + off, off + 29 <= sizeof b ? 29 : sizeof b - off);
        sleep_ms(1);
    }
    /* c's header alone, then its payload; an empty frame in halves */
    raw_write(fd, c, 4);
    sleep_ms(20);
    raw_write(fd, c + 4, 7);
    raw_write(fd, e, 2);
    sleep_ms(20);
    raw_write(fd, e + 2, 2);

    uint8_t got[300];
    cr_assert_eq(raw_recv_frame(fd, got, sizeof got, WAIT_MS), 5);
    cr_assert(memcmp(got, "alpha", 5) == 0);
    cr_assert_eq(raw_recv_frame(fd, got, sizeof got, WAIT_MS), 300);
    cr_assert(memcmp(got, b + 4, 300) == 0);
    cr_assert_eq(raw_recv_frame(fd, got, sizeof got, WAIT_MS), 7);
    cr_assert(memcmp(got, "charlie", 7) == 0);
    cr_assert_eq(raw_recv_frame(fd, got, sizeof got, WAIT_MS), 0);
    cr_assert_not(srv_closed(p.v, id, NULL));
    close(fd);
    expect_reason(&p, id, SM_ECLOSED);
    good_still_served(&p);
    pair_down(&p);
}

/* ------------------------------------------------------------------ */
/* Argument errors                                                     */
/* ------------------------------------------------------------------ */

Test(server, argument_errors_and_a_server_without_handlers, .timeout = 10)
{
    sm_server *s = (sm_server *)&s;
    cr_assert_eq(sm_server_new(NULL, NULL, NULL, NULL), SM_EINVAL);
    sm_server_options bad = { .idle_timeout_ms = -1 };
    cr_assert_eq(sm_server_new(&s, NULL, &bad, NULL), SM_EINVAL);
    cr_assert_null(s);
    bad = (sm_server_options){ .max_conns = -1 };
    cr_assert_eq(sm_server_new(&s, NULL, &bad, NULL), SM_EINVAL);
    cr_assert_eq(sm_server_run(NULL), SM_EINVAL);
    sm_server_stop(NULL);
    sm_server_free(NULL);
    cr_assert_eq(sm_server_send(NULL, 1, "x", 1), SM_EINVAL);
    cr_assert_eq(sm_server_broadcast(NULL, "x", 1, 0), SM_EINVAL);
    cr_assert_eq(sm_server_post(NULL, 1, "x", 1), SM_EINVAL);

    /* No handlers at all: it still accepts, reads and closes. */
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    char addr[SM_ADDRSTRLEN];
    cr_assert_eq(sm_server_addr(s, 0, addr, sizeof addr), SM_EINVAL);
    cr_assert_eq(sm_server_listen(s, NULL), SM_EINVAL);
    cr_assert_eq(sm_server_listen(s, "no port here"), SM_EADDR);
    cr_assert_eq(sm_server_listen(s, "127.0.0.1:0"), 0);
    cr_assert_gt(sm_server_addr(s, 0, addr, sizeof addr), 0);
    cr_assert_eq(sm_server_send(s, 1, NULL, 1), SM_EINVAL);
    cr_assert_eq(sm_server_send(s, 1, "x", 1), SM_ENOCONN);
    cr_assert_eq(sm_server_broadcast(s, NULL, 1, 0), SM_EINVAL);
    cr_assert_eq(sm_server_broadcast(s, "x", 1, 0), 0);
    cr_assert_eq(sm_server_post(s, 1, NULL, 1), SM_EINVAL);
    cr_assert_eq(sm_server_disconnect(s, 1), SM_ENOCONN);
    cr_assert_eq(sm_server_set_data(s, 1, s), SM_ENOCONN);
    cr_assert_null(sm_server_data(s, 1));
    cr_assert_eq(sm_server_peer(s, 1, addr, sizeof addr), SM_ENOCONN);
    cr_assert_eq(sm_server_ids(s, NULL, 0), 0);
    /* A post for nobody is kept until run or free drops it (no leak). */
    cr_assert_eq(sm_server_post(s, 12345, "lost", 4), 0);

    static struct idle_srv x; /* the runner: a thread in sm_server_run */
    x.s = s;
    atomic_init(&x.opens, 0);
    atomic_init(&x.done, 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, idle_run, &x), 0);
    sm_conn *c = client_to(addr);
    send_text(c, "nobody listens");
    expect_silence(c, 100);
    sm_close(c);
    sm_server_stop(s);
    for (int64_t end = now_ms() + WAIT_MS; !atomic_load(&x.done); sleep_ms(1))
        cr_assert_lt(now_ms(), end, "sm_server_run did not return");
    pthread_join(t, NULL);
    sm_server_stats st;
    sm_server_get_stats(s, &st);
    cr_assert_eq(st.accepted, 1);
    cr_assert_eq(st.conns, 0);
    sm_server_free(s);
}
