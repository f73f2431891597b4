/* Threads: concurrent senders on one connection, send while receiving,
 * and the server's cross-thread calls.  Also run under ThreadSanitizer. */
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SENDERS 4
#define PER_SENDER 100
#define MAX_MSG (256 * 1024)

static void connect_pair(sm_listener **l, sm_conn **a, sm_conn **b)
{
    char where[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen(l, "127.0.0.1:0"), 0);
    sm_listener_addr(*l, where, sizeof where);
    cr_assert_eq(sm_connect(b, where), 0);
    cr_assert_eq(sm_accept(*l, a), 0);
}

/* Message `seq` of sender `id`: every byte says who and which, so a frame
 * with another frame's bytes spliced in is caught. */
static size_t message_len(int id, int seq)
{
    return 1000 + (size_t)((id * 7919 + seq * 104729) % (MAX_MSG - 1000));
}

static void fill(uint8_t *p, size_t len, int id, int seq)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(id * 64 + (seq + (int)(i / 4096)) % 64);
}

struct sender {
    sm_conn *c;
    int id;
    int failures;
};

static void *send_all(void *arg)
{
    struct sender *s = arg;
    uint8_t *buf = malloc(MAX_MSG);
    for (int seq = 0; seq < PER_SENDER; seq++) {
        size_t len = message_len(s->id, seq);
        fill(buf, len, s->id, seq);
        buf[0] = (uint8_t)s->id;
        buf[1] = (uint8_t)seq;
        if (sm_send(s->c, buf, len) != 0)
            s->failures++;
    }
    free(buf);
    return NULL;
}

Test(threads, concurrent_sends_never_interleave, .timeout = 60)
{
    sm_listener *l;
    sm_conn *a, *b;
    connect_pair(&l, &a, &b);
    pthread_t t[SENDERS];
    struct sender s[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        s[i] = (struct sender){ b, i, 0 };
        pthread_create(&t[i], NULL, send_all, &s[i]);
    }
    int next_seq[SENDERS] = { 0 };
    uint8_t *want = malloc(MAX_MSG);
    for (int n = 0; n < SENDERS * PER_SENDER; n++) {
        void *msg;
        ssize_t len = sm_recv_alloc(a, &msg);
        cr_assert_geq(len, 2, "message %d: %s", n, sm_last_error());
        uint8_t *p = msg;
        int id = p[0], seq = p[1];
        cr_assert_lt(id, SENDERS);
        cr_assert_eq(seq, next_seq[id], "sender %d out of order", id);
        cr_assert_eq((size_t)len, message_len(id, seq), "sender %d seq %d length", id, seq);
        fill(want, (size_t)len, id, seq);
        cr_assert(memcmp(p + 2, want + 2, (size_t)len - 2) == 0,
                  "sender %d seq %d: bytes of another frame inside", id, seq);
        next_seq[id]++;
        free(msg);
    }
    for (int i = 0; i < SENDERS; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(s[i].failures, 0);
    }
    free(want);
    sm_close(a);
    sm_close(b);
    sm_listener_close(l);
}

struct echo {
    sm_conn *c;
    int count;
};

/* The peer: echoes `count` messages back. */
static void *echo_back(void *arg)
{
    struct echo *e = arg;
    for (int i = 0; i < e->count; i++) {
        void *msg;
        ssize_t len = sm_recv_alloc(e->c, &msg);
        if (len < 0)
            break;
        sm_send(e->c, msg, (size_t)len);
        free(msg);
    }
    return NULL;
}

static void *receive_echoes(void *arg)
{
    struct echo *e = arg;
    char buf[64], want[64];
    for (int i = 0; i < e->count; i++) {
        int n = snprintf(want, sizeof want, "duplex %d", i);
        if (sm_recv(e->c, buf, sizeof buf) != n || memcmp(buf, want, (size_t)n) != 0)
            return (void *)1;
    }
    return NULL;
}

Test(threads, one_thread_sends_while_another_receives, .timeout = 30)
{
    sm_listener *l;
    sm_conn *a, *b;
    connect_pair(&l, &a, &b);
    const int count = 5000;
    struct echo peer = { a, count }, mine = { b, count };
    pthread_t p, r;
    pthread_create(&p, NULL, echo_back, &peer);
    pthread_create(&r, NULL, receive_echoes, &mine);
    char msg[64];
    for (int i = 0; i < count; i++) {
        int n = snprintf(msg, sizeof msg, "duplex %d", i);
        cr_assert_eq(sm_send(b, msg, (size_t)n), 0);
    }
    void *bad;
    pthread_join(r, &bad);
    pthread_join(p, NULL);
    cr_assert_null(bad, "every echo arrived intact and in order");
    sm_close(a);
    sm_close(b);
    sm_listener_close(l);
}

/* ---- the server from other threads ---- */

struct server_run {
    sm_server *s;
    atomic_int closes;
    atomic_int last_reason;
    atomic_ullong first_id;
};

static void remember_id(sm_server *s, sm_conn_id id, void *arg)
{
    (void)s;
    struct server_run *r = arg;
    unsigned long long none = 0;
    atomic_compare_exchange_strong(&r->first_id, &none, id);
}

static void count_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)s;
    (void)id;
    struct server_run *r = arg;
    atomic_store(&r->last_reason, reason);
    atomic_fetch_add(&r->closes, 1);
}

static void *run_server(void *arg)
{
    struct server_run *r = arg;
    return (void *)(intptr_t)sm_server_run(r->s);
}

static void start_server(struct server_run *r, pthread_t *t, char *where)
{
    sm_server_handlers h = { .on_open = remember_id, .on_close = count_close };
    atomic_init(&r->closes, 0);
    atomic_init(&r->last_reason, 1);
    atomic_init(&r->first_id, 0);
    cr_assert_eq(sm_server_new(&r->s, &h, NULL, r), 0);
    cr_assert_eq(sm_server_listen(r->s, "127.0.0.1:0"), 0);
    sm_server_addr(r->s, 0, where, SM_ADDRSTRLEN);
    pthread_create(t, NULL, run_server, r);
}

struct poster {
    sm_server *s;
    sm_conn_id id;
    int thread;
};

static void *post_many(void *arg)
{
    struct poster *p = arg;
    char msg[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(msg, sizeof msg, "%d %d", p->thread, i);
        sm_server_post(p->s, p->id, msg, (size_t)n);
    }
    return NULL;
}

Test(threads, server_post_from_other_threads_arrives_in_order, .timeout = 30)
{
    struct server_run r;
    pthread_t t, posters[4];
    char where[SM_ADDRSTRLEN];
    start_server(&r, &t, where);
    sm_conn *c;
    sm_options o = { .recv_timeout_ms = 5000 };
    cr_assert_eq(sm_connect_opts(&c, where, &o), 0);
    for (int i = 0; i < 200 && !atomic_load(&r.first_id); i++)
        usleep(10000);
    sm_conn_id id = atomic_load(&r.first_id);
    cr_assert_neq(id, 0);
    struct poster p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (struct poster){ r.s, id, i };
        pthread_create(&posters[i], NULL, post_many, &p[i]);
    }
    int next[4] = { 0 };
    for (int n = 0; n < 4000; n++) {
        char buf[32];
        ssize_t len = sm_recv(c, buf, sizeof buf - 1);
        cr_assert_gt(len, 0, "post %d: %s", n, sm_last_error());
        buf[len] = '\0';
        int thread, i;
        cr_assert_eq(sscanf(buf, "%d %d", &thread, &i), 2);
        cr_assert_eq(i, next[thread], "thread %d in order", thread);
        next[thread]++;
    }
    for (int i = 0; i < 4; i++)
        pthread_join(posters[i], NULL);
    sm_server_stop(r.s);
    pthread_join(t, NULL);
    sm_close(c);
    sm_server_free(r.s);
}

Test(threads, server_stop_from_another_thread_closes_everyone, .timeout = 30)
{
    struct server_run r;
    pthread_t t;
    char where[SM_ADDRSTRLEN];
    start_server(&r, &t, where);
    sm_conn *c[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(sm_connect(&c[i], where), 0);
    usleep(200000);
    sm_server_stop(r.s);
    void *rc;
    pthread_join(t, &rc);
    cr_assert_null(rc, "run returned 0");
    cr_assert_eq(atomic_load(&r.closes), 5, "every on_close fired");
    cr_assert_eq(atomic_load(&r.last_reason), SM_ESTOPPED);
    char buf[4];
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(sm_recv(c[i], buf, sizeof buf), SM_ECLOSED);
        sm_close(c[i]);
    }
    /* A stop asked for before run makes run return at once. */
    sm_server_stop(r.s);
    cr_assert_eq(sm_server_run(r.s), 0);
    sm_server_free(r.s);
}
