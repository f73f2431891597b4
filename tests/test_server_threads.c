/*
 * The event-driven server across threads: sm_server_post from other
 * threads, sm_server_stop from another thread and from a signal handler,
 * client threads at once.  Suite "threads": also run under
 * ThreadSanitizer, where this file is built against the stand-in in
 * tests/tsan (assertions only on the test's own thread).
 */
#include "support/support.h"

#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define POSTERS 4
#define POSTS 1000

struct poster {
    sm_server *s;
    sm_conn_id id;
    int index, count;
    atomic_int *go;
    int failures, last_rc;
};

static void *poster_main(void *arg)
{
    struct poster *p = arg;
    while (p->go && !atomic_load(p->go))
        sched_yield();
    for (int i = 0; i < p->count; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "p%d %d", p->index, i);
        int rc = sm_server_post(p->s, p->id, msg, (size_t)n);
        if (rc) {
            p->failures++;
            p->last_rc = rc;
        }
    }
    return NULL;
}

Test(threads, server_posts_from_four_threads_all_arrive_in_order, .timeout = 15)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *c = client_to(v->addr);
    sm_conn_id id = ask_id(c);
    atomic_int go;
    atomic_init(&go, 0);
    struct poster p[POSTERS];
    pthread_t t[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        p[i] = (struct poster){ .s = v->s, .id = id, .index = i, .count = POSTS, .go = &go };
        cr_assert_eq(pthread_create(&t[i], NULL, poster_main, &p[i]), 0);
    }
    atomic_store(&go, 1);
    int next[POSTERS] = { 0 };
    for (int k = 0; k < POSTERS * POSTS; k++) {
        char buf[64];
        recv_text(c, buf, sizeof buf);
        int who, seq;
        cr_assert_eq(sscanf(buf, "p%d %d", &who, &seq), 2, "message %d: '%s'", k, buf);
        cr_assert(who >= 0 && who < POSTERS, "'%s'", buf);
        cr_assert_eq(seq, next[who], "thread %d: got %d, expected %d", who, seq, next[who]);
        next[who]++;
    }
    for (int i = 0; i < POSTERS; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(p[i].failures, 0, "thread %d: %s", i, sm_strerror(p[i].last_rc));
    }
    expect_silence(c, 200);
    ping(c);
    sm_close(c);
    server_down(v);
}

struct one_post {
    sm_server *s;
    sm_conn_id gone, live;
    int rc_gone, rc_live, rc_null_server, rc_null_msg;
};

static void *one_post_main(void *arg)
{
    struct one_post *o = arg;
    o->rc_gone = sm_server_post(o->s, o->gone, "lost", 4);
    o->rc_null_server = sm_server_post(NULL, o->live, "x", 1);
    o->rc_null_msg = sm_server_post(o->s, o->live, NULL, 1);
    o->rc_live = sm_server_post(o->s, o->live, "found", 5);
    return NULL;
}

Test(threads, server_post_to_a_gone_id_is_dropped, .timeout = 10)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *a = client_to(v->addr);
    sm_conn_id ida = ask_id(a);
    sm_close(a);
    cr_assert(wait_closed(v, ida, WAIT_MS, NULL));
    sm_conn *b = client_to(v->addr); /* likely on a's old descriptor */
    sm_conn_id idb = ask_id(b);
    struct one_post o = { .s = v->s, .gone = ida, .live = idb };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, one_post_main, &o), 0);
    pthread_join(t, NULL);
    cr_assert_eq(o.rc_gone, 0, "a post is accepted, then dropped: %s", sm_strerror(o.rc_gone));
    cr_assert_eq(o.rc_null_server, SM_EINVAL);
    cr_assert_eq(o.rc_null_msg, SM_EINVAL);
    cr_assert_eq(o.rc_live, 0);
    expect_text(b, "found");
    expect_silence(b, 200);
    sm_close(b);
    server_down(v);
}

Test(threads, server_posts_racing_a_stop_are_delivered_or_freed, .timeout = 10)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *c = client_to(v->addr);
    sm_conn_id id = ask_id(c);
    struct poster p[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        p[i] = (struct poster){ .s = v->s, .id = id, .index = i, .count = 2000 };
        cr_assert_eq(pthread_create(&t[i], NULL, poster_main, &p[i]), 0);
    }
    sleep_ms(5);
    server_halt(v); /* while the posters may still be posting */
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(p[i].failures, 0, "%s", sm_strerror(p[i].last_rc));
    }
    /* Whatever arrived came in order, then the end of the stream. */
    int next[2] = { 0, 0 };
    for (int k = 0; k < 4001; k++) {
        char buf[64];
        ssize_t n = sm_recv(c, buf, sizeof buf - 1);
        if (n == SM_ECLOSED)
            break;
        cr_assert_geq(n, 0, "%s", sm_strerror((int)n));
        buf[n] = '\0';
        int who, seq;
        cr_assert_eq(sscanf(buf, "p%d %d", &who, &seq), 2, "'%s'", buf);
        cr_assert(who >= 0 && who < 2);
        cr_assert_eq(seq, next[who]);
        next[who]++;
    }
    sm_close(c);
    srv_destroy(v); /* frees the posts that never reached the loop */
}

static void *stop_main(void *arg)
{
    sm_server_stop(arg);
    return NULL;
}

Test(threads, server_stop_from_another_thread_with_clients, .timeout = 10)
{
    enum { N = 20 };
    struct srv *v = server_up(NULL, ECHO | TRACK);
    sm_conn *c[N];
    sm_conn_id ids[N];
    for (int i = 0; i < N; i++) {
        c[i] = client_to(v->addr);
        ids[i] = ask_id(c[i]);
    }
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, stop_main, v->s), 0);
    pthread_join(t, NULL);
    int rc = srv_join(v, WAIT_MS);
    cr_assert_eq(rc, 0, "sm_server_run: %d", rc);
    server_check(v);
    cr_assert_eq(srv_count(v, 1), N, "on_close fired %zu times", srv_count(v, 1));
    for (int i = 0; i < N; i++) {
        struct close_ev ev = { 0 };
        cr_assert(srv_closed(v, ids[i], &ev), "client %d: no on_close", i);
        cr_assert_eq(ev.reason, SM_ESTOPPED);
        expect_eof(c[i]);
        sm_close(c[i]);
    }
    srv_destroy(v);
}

static _Atomic(sm_server *) sig_server;

static void stop_on_sigusr1(int sig)
{
    (void)sig;
    sm_server_stop(atomic_load(&sig_server));
}

Test(threads, server_stop_from_a_signal_handler, .timeout = 10)
{
    struct srv *v = server_new_only(NULL, ECHO);
    atomic_store(&sig_server, v->s);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stop_on_sigusr1;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
    /* Once at the server thread, once at the whole process. */
    for (int round = 0; round < 2; round++) {
        server_start(v);
        sm_conn *c = client_to(v->addr);
        sm_conn_id id = ask_id(c);
        if (round == 0)
            cr_assert_eq(pthread_kill(v->thread, SIGUSR1), 0);
        else
            cr_assert_eq(kill(getpid(), SIGUSR1), 0);
        int rc = srv_join(v, WAIT_MS);
        cr_assert_neq(rc, 1, "round %d: the signal did not stop the server", round);
        cr_assert_eq(rc, 0);
        struct close_ev ev = { 0 };
        cr_assert(srv_closed(v, id, &ev));
        cr_assert_eq(ev.reason, SM_ESTOPPED);
        expect_eof(c);
        sm_close(c);
    }
    sigaction(SIGUSR1, &old, NULL);
    server_check(v);
    srv_destroy(v);
}

struct echo_worker {
    const char *addr;
    int index, rounds, failures;
    char what[128];
};

static void *echo_worker_main(void *arg)
{
    struct echo_worker *w = arg;
    sm_conn *c = NULL;
    if (sm_connect_opts(&c, w->addr, &client_opts) != 0) {
        snprintf(w->what, sizeof w->what, "connect: %s", sm_last_error());
        w->failures++;
        return NULL;
    }
    uint8_t msg[PAYLOAD_MAX], got[PAYLOAD_MAX];
    for (int r = 0; r < w->rounds && !w->failures; r++) {
        size_t len = make_payload(msg, w->index, r);
        ssize_t n = sm_send(c, msg, len) == 0 ? sm_recv(c, got, sizeof got) : -1;
        if (n != (ssize_t)len || memcmp(got, msg, len) != 0) {
            snprintf(w->what, sizeof w->what, "round %d: %zd", r, n);
            w->failures++;
        }
    }
    sm_close(c);
    return NULL;
}

Test(threads, server_serves_client_threads_at_once, .timeout = 15)
{
    enum { WORKERS = 8, ROUNDS = 200 };
    struct srv *v = server_up(NULL, ECHO);
    struct echo_worker w[WORKERS];
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (struct echo_worker){ .addr = v->addr, .index = i, .rounds = ROUNDS };
        cr_assert_eq(pthread_create(&t[i], NULL, echo_worker_main, &w[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < WORKERS; i++)
        cr_assert_eq(w[i].failures, 0, "worker %d: %s", i, w[i].what);
    cr_assert(wait_count(v, 1, WORKERS, WAIT_MS));
    cr_assert_eq(atomic_load(&v->messages), (uint64_t)WORKERS * ROUNDS);
    server_down(v);
}
