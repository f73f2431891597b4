/*
 * Peers that come and go: links the server dials (sm_server_connect),
 * dialled again with backoff whenever they drop, with a stable id, sends
 * queued while down, and sm_connect_retry for blocking clients.
 */
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What the dialling server's handlers saw. */
struct seen {
    atomic_int opens, closes, retries, messages;
    atomic_int last_reason;
    int delays[64];     /* on_retry's delay_ms, in order */
    int64_t at[64];     /* when each on_retry came */
    atomic_int dialled; /* sm_server_dialled in on_open */
};

static void on_open(sm_server *s, sm_conn_id id, void *arg)
{
    struct seen *w = arg;
    atomic_fetch_add(&w->opens, 1);
    atomic_store(&w->dialled, sm_server_dialled(s, id));
}

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)s;
    (void)id;
    (void)msg;
    (void)len;
    atomic_fetch_add(&((struct seen *)arg)->messages, 1);
}

static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)s;
    (void)id;
    struct seen *w = arg;
    atomic_store(&w->last_reason, reason);
    atomic_fetch_add(&w->closes, 1);
}

static void on_retry(sm_server *s, sm_conn_id id, int reason, int delay_ms, void *arg)
{
    (void)s;
    (void)id;
    struct seen *w = arg;
    int n = atomic_load(&w->retries);
    if (n < 64) {
        w->delays[n] = delay_ms;
        w->at[n] = now_ms();
    }
    atomic_store(&w->last_reason, reason);
    atomic_fetch_add(&w->retries, 1);
}

static const sm_server_handlers handlers = { on_open, on_message, on_close, on_retry };

/* Runs s's loop on the calling thread for ms. */
static void run_for(sm_server *s, int ms)
{
    int64_t until = now_ms() + ms;
    while (now_ms() < until)
        sm_server_run_once(s, (int)(until - now_ms()));
}

/* Runs s's loop until *counter reaches want, for at most ms. */
static int run_until(sm_server *s, atomic_int *counter, int want, int ms)
{
    int64_t until = now_ms() + ms;
    while (atomic_load(counter) < want && now_ms() < until)
        sm_server_run_once(s, 20);
    return atomic_load(counter);
}

/* ---- the peer: an echo server on its own thread, stopped and restarted ---- */

struct peer {
    sm_server *s;
    pthread_t thread;
    char addr[SM_ADDRSTRLEN];
    atomic_int got;     /* messages received */
    atomic_int ordered; /* 1 while every message is the next number */
};

static void peer_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    struct peer *p = arg;
    uint32_t seq = 0;
    if (len == sizeof seq) {
        memcpy(&seq, msg, sizeof seq);
        if (seq != (uint32_t)atomic_load(&p->got))
            atomic_store(&p->ordered, 0);
    }
    atomic_fetch_add(&p->got, 1);
    sm_server_send(s, id, msg, len);
}

static void *peer_run(void *arg)
{
    sm_server_run(((struct peer *)arg)->s);
    return NULL;
}

/* Starts the peer on addr (port 0 picks one: then p->addr says which). */
static void peer_start(struct peer *p, const char *addr)
{
    sm_server_handlers h = { .on_message = peer_message };
    cr_assert_eq(sm_server_new(&p->s, &h, NULL, p), 0);
    cr_assert_eq(sm_server_listen(p->s, addr), 0, "listen %s: %s", addr, sm_last_error());
    cr_assert_gt(sm_server_addr(p->s, 0, p->addr, sizeof p->addr), 0);
    atomic_store(&p->ordered, 1);
    cr_assert_eq(pthread_create(&p->thread, NULL, peer_run, p), 0);
}

static void peer_stop(struct peer *p)
{
    sm_server_stop(p->s);
    pthread_join(p->thread, NULL);
    sm_server_free(p->s);
}

/* An address nobody listens on: a port the kernel gave and took back. */
static void dead_addr(char addr[SM_ADDRSTRLEN])
{
    sm_listener *l;
    cr_assert_eq(sm_listen(&l, "127.0.0.1:0"), 0);
    cr_assert_gt(sm_listener_addr(l, addr, SM_ADDRSTRLEN), 0);
    sm_listener_close(l);
}

Test(dial, a_dropped_link_comes_back_with_backoff, .timeout = 30)
{
    struct peer p = { 0 };
    peer_start(&p, "127.0.0.1:0");
    struct seen w = { 0 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &handlers, NULL, &w), 0);
    sm_dial_options o = { .min_retry_ms = 100, .max_retry_ms = 400 };
    sm_conn_id id;
    cr_assert_eq(sm_server_connect(s, p.addr, &o, &id), 0, "%s", sm_last_error());
    cr_assert_eq(run_until(s, &w.opens, 1, 5000), 1, "the link came up");
    cr_expect_eq(atomic_load(&w.dialled), 1, "on_open can tell a dialled link");
    /* The peer goes away: the link drops, and tries come with backoff. */
    char addr[SM_ADDRSTRLEN];
    memcpy(addr, p.addr, sizeof addr);
    peer_stop(&p);
    cr_assert_eq(run_until(s, &w.closes, 1, 5000), 1, "on_close when it dropped");
    run_for(s, 1500);
    int tries = atomic_load(&w.retries);
    cr_assert_geq(tries, 4, "%d tries in 1.5 s", tries);
    for (int i = 0; i < tries && i < 64; i++) {
        int interval = 100 << (i + 1) < 400 ? 100 << (i + 1) : 400; /* the drop took 100 */
        cr_expect(w.delays[i] >= interval / 2 && w.delays[i] <= interval,
                  "wait %d: %d ms, interval %d", i, w.delays[i], interval);
        if (i > 0) {
            int64_t gap = w.at[i] - w.at[i - 1];
            cr_expect(gap >= w.delays[i - 1] - 5 && gap <= w.delays[i - 1] + 200,
                      "try %d came %lld ms after the last, announced %d", i, (long long)gap,
                      w.delays[i - 1]);
        }
    }
    cr_expect_eq(atomic_load(&w.last_reason), -ECONNREFUSED);
    /* Back on the same port: up again within the longest wait and a second. */
    peer_start(&p, addr);
    int64_t back = now_ms();
    cr_assert_eq(run_until(s, &w.opens, 2, 400 + 1000), 2, "the link came back");
    cr_expect_leq(now_ms() - back, 1400);
    /* The same id reaches the new connection. */
    cr_assert_eq(sm_server_send(s, id, "ping", 4), 0, "%s", sm_last_error());
    cr_expect_eq(run_until(s, &w.messages, 1, 5000), 1, "the echo came back on the same id");
    sm_server_free(s);
    peer_stop(&p);
}

Test(dial, sends_while_down_arrive_in_order_once_up, .timeout = 30)
{
    char addr[SM_ADDRSTRLEN];
    dead_addr(addr);
    struct seen w = { 0 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &handlers, NULL, &w), 0);
    sm_dial_options o = { .min_retry_ms = 20, .max_retry_ms = 100 };
    sm_conn_id id;
    cr_assert_eq(sm_server_connect(s, addr, &o, &id), 0);
    run_until(s, &w.retries, 2, 5000);
    for (uint32_t i = 0; i < 100; i++)
        cr_assert_eq(sm_server_send(s, id, &i, sizeof i), 0, "queued while down: %s",
                     sm_last_error());
    struct peer p = { 0 };
    peer_start(&p, addr);
    int64_t until = now_ms() + 5000;
    while (atomic_load(&p.got) < 100 && now_ms() < until)
        sm_server_run_once(s, 20);
    cr_expect_eq(atomic_load(&p.got), 100, "every queued message arrived");
    cr_expect_eq(atomic_load(&p.ordered), 1, "in order");
    cr_expect_eq(atomic_load(&w.opens), 1);
    sm_server_free(s);
    peer_stop(&p);
}

Test(dial, disconnecting_a_link_in_backoff_ends_it)
{
    char addr[SM_ADDRSTRLEN];
    dead_addr(addr);
    struct seen w = { 0 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &handlers, NULL, &w), 0);
    sm_dial_options o = { .min_retry_ms = 50, .max_retry_ms = 50 };
    sm_conn_id id;
    cr_assert_eq(sm_server_connect(s, addr, &o, &id), 0);
    cr_assert_eq(run_until(s, &w.retries, 1, 5000), 1);
    cr_assert_eq(sm_server_disconnect(s, id), 0);
    run_for(s, 300);
    cr_expect_eq(atomic_load(&w.retries), 1, "no try after the disconnect");
    cr_expect_eq(atomic_load(&w.closes), 0, "it was never up: no on_close");
    cr_expect_eq(sm_server_send(s, id, "x", 1), SM_ENOCONN, "the id is gone");
    cr_expect_eq(sm_server_ids(s, NULL, 0), 0);
    sm_server_free(s);
}

Test(dial, a_name_that_does_not_resolve_never_stalls_the_loop, .timeout = 60)
{
    struct seen w = { 0 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &handlers, NULL, &w), 0);
    sm_conn_id id;
    cr_assert_eq(sm_server_connect(s, "no-such-host.invalid:9", NULL, &id), 0);
    cr_expect_eq(sm_server_connect(s, "nonsense", NULL, &id), SM_EADDR);
    cr_expect_eq(sm_server_connect(s, "127.0.0.1:0", NULL, &id), SM_EADDR);
    int64_t longest = 0, until = now_ms() + 30000;
    while (atomic_load(&w.retries) < 1 && now_ms() < until) {
        int64_t t0 = now_ms();
        sm_server_run_once(s, 10);
        if (now_ms() - t0 > longest)
            longest = now_ms() - t0;
    }
    cr_assert_geq(atomic_load(&w.retries), 1, "the lookup failed and a retry is set");
    cr_expect_eq(atomic_load(&w.last_reason), SM_EADDR);
    cr_expect_lt(longest, 200, "one loop iteration took %lld ms", (long long)longest);
    sm_server_free(s); /* with a lookup perhaps still running */
}

static void send_on_open(sm_server *s, sm_conn_id id, void *arg)
{
    on_open(s, id, arg);
    sm_server_send(s, id, "hi", 2);
}

Test(dial, a_thousand_links_from_one_server_to_another, .timeout = 60)
{
    struct peer p = { 0 };
    peer_start(&p, "127.0.0.1:0");
    struct seen w = { 0 };
    sm_server_handlers h = handlers;
    h.on_open = send_on_open;
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, NULL, &w), 0);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(sm_server_connect(s, p.addr, NULL, NULL), 0, "%s", sm_last_error());
    cr_expect_eq(run_until(s, &w.messages, 1000, 30000), 1000, "every link echoed");
    cr_expect_eq(atomic_load(&w.opens), 1000);
    cr_expect_eq(sm_server_ids(s, NULL, 0), 1000);
    sm_server_free(s);
    peer_stop(&p);
}

/* ---- blocking clients ---- */

struct late_peer {
    struct peer p;
    char addr[SM_ADDRSTRLEN];
    int after_ms;
};

static void *start_late(void *arg)
{
    struct late_peer *l = arg;
    struct timespec ts = { 0, (long)l->after_ms * 1000000L };
    nanosleep(&ts, NULL);
    peer_start(&l->p, l->addr);
    return NULL;
}

Test(dial, a_blocking_client_connects_once_the_server_is_there, .timeout = 30)
{
    static struct late_peer l;
    dead_addr(l.addr);
    l.after_ms = 400;
    pthread_t t;
    pthread_create(&t, NULL, start_late, &l);
    sm_conn *c;
    int64_t start = now_ms();
    int rc = sm_connect_retry(&c, l.addr, NULL, 10000);
    cr_assert_eq(rc, 0, "%d %s", rc, sm_last_error());
    cr_expect_geq(now_ms() - start, 350, "it waited for the server");
    pthread_join(t, NULL);
    cr_assert_eq(sm_send(c, "x", 1), 0);
    char b;
    cr_expect_eq(sm_recv(c, &b, 1), 1);
    sm_close(c);
    peer_stop(&l.p);
    /* Nobody comes: it gives up after max_wait_ms with the last error. */
    char dead[SM_ADDRSTRLEN];
    dead_addr(dead);
    start = now_ms();
    cr_expect_eq(sm_connect_retry(&c, dead, NULL, 300), -ECONNREFUSED);
    cr_expect(now_ms() - start >= 250 && now_ms() - start < 2000, "gave up after %lld ms",
              (long long)(now_ms() - start));
    cr_expect_eq(sm_connect_retry(&c, "bad address", NULL, 300), SM_EADDR, "not retried");
}

/* ---- posts from other threads, and what a clean close keeps ---- */

struct poster {
    sm_server *s;
    sm_conn_id id;
    int rc;
};

static void *post_once(void *arg)
{
    struct poster *p = arg;
    p->rc = sm_server_post(p->s, p->id, "posted", 6);
    return NULL;
}

Test(dial, posts_reach_a_dialled_link, .timeout = 30)
{
    struct peer p = { 0 };
    peer_start(&p, "127.0.0.1:0");
    struct seen w = { 0 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &handlers, NULL, &w), 0);
    sm_conn_id id;
    cr_assert_eq(sm_server_connect(s, p.addr, NULL, &id), 0);
    cr_assert_eq(run_until(s, &w.opens, 1, 5000), 1);
    struct poster po = { s, id, 1 };
    pthread_t t;
    pthread_create(&t, NULL, post_once, &po);
    pthread_join(t, NULL);
    cr_expect_eq(po.rc, 0, "a dialled id is a connection: %s", sm_last_error());
    cr_expect_eq(run_until(s, &w.messages, 1, 5000), 1, "the post went out and came back");
    sm_server_free(s);
    peer_stop(&p);
}

Test(dial, a_clean_close_keeps_what_was_queued, .timeout = 30)
{
    struct peer p = { 0 };
    peer_start(&p, "127.0.0.1:0");
    struct seen w = { 0 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &handlers, NULL, &w), 0);
    sm_dial_options o = { .min_retry_ms = 50, .max_retry_ms = 100 };
    sm_conn_id id;
    cr_assert_eq(sm_server_connect(s, p.addr, &o, &id), 0);
    cr_assert_eq(run_until(s, &w.opens, 1, 5000), 1);
    char addr[SM_ADDRSTRLEN];
    memcpy(addr, p.addr, sizeof addr);
    /* Queued while up, not yet written (the loop has not run since), when
     * the peer closes cleanly: none of it may go to the dead connection. */
    for (uint32_t i = 0; i < 10; i++)
        cr_assert_eq(sm_server_send(s, id, &i, sizeof i), 0);
    peer_stop(&p);
    cr_assert_eq(run_until(s, &w.closes, 1, 5000), 1);
    memset(&p, 0, sizeof p);
    peer_start(&p, addr);
    int64_t until = now_ms() + 5000;
    while (atomic_load(&p.got) < 10 && now_ms() < until)
        sm_server_run_once(s, 20);
    cr_expect_eq(atomic_load(&p.got), 10, "all ten reached the peer once it was back");
    cr_expect_eq(atomic_load(&p.ordered), 1);
    sm_server_free(s);
    peer_stop(&p);
}
