/*
 * Inside someone else's event loop: the adapters
 * (include/sockmsg/adapters/libuv.h and libevent.h) and the programs that
 * use them or the non-blocking API.
 *
 * Suite adapters, in-process, each test once per loop (uv_*, event_*):
 * the server's timers run through the adapter's timer; work done outside
 * the server's handlers (a timer set, a message queued) is picked up after
 * sm_uv_update / sm_event_update; a stop ends the loop with every client
 * closed and a detach leaves nothing in the loop; a detach from inside a
 * handler is safe and the server serves again under a new adapter; the
 * argument checks.  The loop runs on the test's thread; helper threads
 * are clients (blocking API) and may call sm_server_stop.
 *
 * Suite examples (make check-valgrind runs them with every program under
 * valgrind): uv-echo-server and event-echo-server serve several clients at
 * once, a 1 MiB message and an empty one, and exit 0 on SIGTERM and
 * SIGINT; poll-client relays stdin to two echo-servers while it serves its
 * own listener, never waits on a peer whose connect never finishes, and
 * exits 0 on SIGTERM.
 *
 * The adapter tests need libuv and libevent (make deps installs both).
 * Where one is missing, its tests are skipped with a note, and fail
 * instead when SM_REQUIRE_TOOLS is set (as .ci/run does).
 */
#include "support/support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef SM_TEST_LIBUV
#include <sockmsg/adapters/libuv.h>
#endif
#ifdef SM_TEST_LIBEVENT
#include <sockmsg/adapters/libevent.h>
#endif

#define EXAMPLE(name) BUILD_DIR "/examples/" name
#define IO_MS 15000 /* every blocking call of the tests' clients */

static const sm_options patient = { .connect_timeout_ms = IO_MS,
                                    .send_timeout_ms = IO_MS,
                                    .recv_timeout_ms = IO_MS };

/* Skips the test when lib is not there, or fails it under SM_REQUIRE_TOOLS. */
static void require(int present, const char *what, const char *lib)
{
    if (present)
        return;
    if (getenv("SM_REQUIRE_TOOLS"))
        cr_assert_fail("%s: %s is not installed (make deps) and SM_REQUIRE_TOOLS is set", what,
                       lib);
    /* Criterion shows a skip's reason only with --verbose: say it here too. */
    fprintf(stderr, "note: skipped, %s: %s is not installed (make deps installs it)\n", what, lib);
    cr_skip_test("%s: %s is not installed (make deps installs it)", what, lib);
}

static sm_conn *client(const char *addr)
{
    sm_conn *c = NULL;
    int rc = sm_connect_opts(&c, addr, &patient);
    cr_assert_eq(rc, 0, "connect to %s: %s", addr, sm_last_error());
    return c;
}

static void round_trip(sm_conn *c, const char *text)
{
    send_text(c, text);
    expect_text(c, text);
}

/* ======================================================================
 * Suite adapters: each adapter on its own loop, in this process.
 * ====================================================================== */

TestSuite(adapters, .timeout = 20);

struct rig;

/* What differs between the loops, behind one face. */
struct loop_kind {
    void (*open)(struct rig *r);
    int (*attach)(struct rig *r);
    void (*detach)(struct rig *r);
    int (*update)(struct rig *r);
    int (*status)(struct rig *r);
    void (*run)(struct rig *r);                                      /* until nothing is left */
    void (*after)(struct rig *r, int ms, void (*fn)(struct rig *r)); /* a timer of the loop's */
    int (*shut)(struct rig *r); /* frees the loop: how many handles or events it still held */
};

struct rig {
    const struct loop_kind *kind;
    sm_server *s;
    char addr[SM_ADDRSTRLEN];
#ifdef SM_TEST_LIBUV
    uv_loop_t uv;
    sm_uv_adapter *uva;
#endif
#ifdef SM_TEST_LIBEVENT
    struct event_base *base;
    sm_event_adapter *eva;
#endif
    /* What the callbacks saw: they run on the loop, this test's thread. */
    int ticks, fired, closes, last_reason, detached_in_handler;
    int peer_fd;       /* the test's end of an adopted socketpair */
    sm_conn_id peer;   /* the server's id for the other end */
    int readable;      /* peer_fd had bytes when checked */
    int64_t ticked_at; /* when the fifth tick came */
};

#ifdef SM_TEST_LIBUV
static void uv_open_(struct rig *r)
{
    cr_assert_eq(uv_loop_init(&r->uv), 0);
}
static int uv_attach_(struct rig *r)
{
    return sm_uv_attach(r->s, &r->uv, &r->uva);
}
static void uv_detach_(struct rig *r)
{
    sm_uv_detach(r->uva);
    r->uva = NULL; /* freed as libuv closes its handles */
}
static int uv_update_(struct rig *r)
{
    return sm_uv_update(r->uva);
}
static int uv_status_(struct rig *r)
{
    return sm_uv_status(r->uva);
}
static void uv_run_(struct rig *r)
{
    uv_run(&r->uv, UV_RUN_DEFAULT);
}

struct uv_later {
    uv_timer_t timer;
    void (*fn)(struct rig *r);
    struct rig *r;
};
static void uv_later_free(uv_handle_t *h)
{
    free(h->data);
}
static void uv_later_fire(uv_timer_t *t)
{
    struct uv_later *l = t->data;
    l->fn(l->r);
    uv_close((uv_handle_t *)t, uv_later_free);
}
static void uv_after_(struct rig *r, int ms, void (*fn)(struct rig *r))
{
    struct uv_later *l = calloc(1, sizeof *l);
    cr_assert_not_null(l);
    *l = (struct uv_later){ .fn = fn, .r = r };
    cr_assert_eq(uv_timer_init(&r->uv, &l->timer), 0);
    l->timer.data = l;
    cr_assert_eq(uv_timer_start(&l->timer, uv_later_fire, (uint64_t)ms, 0), 0);
}
static int uv_shut_(struct rig *r)
{
    uv_run(&r->uv, UV_RUN_DEFAULT); /* close callbacks */
    int busy = uv_loop_alive(&r->uv);
    return uv_loop_close(&r->uv) == 0 ? busy : 1;
}

static const struct loop_kind uv_kind = { uv_open_,   uv_attach_, uv_detach_, uv_update_,
                                          uv_status_, uv_run_,    uv_after_,  uv_shut_ };
#define UV_KIND &uv_kind
#else
#define UV_KIND NULL
#endif

#ifdef SM_TEST_LIBEVENT
static void ev_open_(struct rig *r)
{
    r->base = event_base_new();
    cr_assert_not_null(r->base);
}
static int ev_attach_(struct rig *r)
{
    return sm_event_attach(r->s, r->base, &r->eva);
}
static void ev_detach_(struct rig *r)
{
    sm_event_detach(r->eva);
    r->eva = NULL;
}
static int ev_update_(struct rig *r)
{
    return sm_event_update(r->eva);
}
static int ev_status_(struct rig *r)
{
    return sm_event_status(r->eva);
}
static void ev_run_(struct rig *r)
{
    event_base_dispatch(r->base);
}

struct ev_later {
    struct event *ev;
    void (*fn)(struct rig *r);
    struct rig *r;
};
static void ev_later_fire(evutil_socket_t fd, short what, void *arg)
{
    struct ev_later *l = arg;
    (void)fd;
    (void)what;
    l->fn(l->r);
    event_free(l->ev);
    free(l);
}
static void ev_after_(struct rig *r, int ms, void (*fn)(struct rig *r))
{
    struct ev_later *l = calloc(1, sizeof *l);
    cr_assert_not_null(l);
    *l = (struct ev_later){ .fn = fn, .r = r };
    l->ev = evtimer_new(r->base, ev_later_fire, l);
    cr_assert_not_null(l->ev);
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    cr_assert_eq(evtimer_add(l->ev, &tv), 0);
}
static int ev_shut_(struct rig *r)
{
    int left = event_base_get_num_events(r->base, EVENT_BASE_COUNT_ADDED);
    event_base_free(r->base);
    return left;
}

static const struct loop_kind event_kind = { ev_open_,   ev_attach_, ev_detach_, ev_update_,
                                             ev_status_, ev_run_,    ev_after_,  ev_shut_ };
#define EVENT_KIND &event_kind
#else
#define EVENT_KIND NULL
#endif

/* ---- the server under test ---- */

/* Echo, except "detach", which detaches the adapter from inside this
 * handler and is not answered. */
static void rig_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    struct rig *r = arg;
    if (len == 6 && memcmp(msg, "detach", 6) == 0) {
        r->kind->detach(r);
        r->detached_in_handler = 1;
        return;
    }
    sm_server_send(s, id, msg, len);
}

static void rig_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    struct rig *r = arg;
    (void)s;
    (void)id;
    r->closes++;
    r->last_reason = reason;
}

/* A server listening on 127.0.0.1:0 (r->addr) and the loop, not attached. */
static void rig_open(struct rig *r, const struct loop_kind *kind)
{
    *r = (struct rig){ .kind = kind, .peer_fd = -1 };
    sm_server_handlers h = { .on_message = rig_message, .on_close = rig_close };
    cr_assert_eq(sm_server_new(&r->s, &h, NULL, r), 0, "%s", sm_last_error());
    cr_assert_geq(sm_server_listen(r->s, "127.0.0.1:0"), 0, "%s", sm_last_error());
    cr_assert_gt(sm_server_addr(r->s, 0, r->addr, sizeof r->addr), 0);
    kind->open(r);
}

static void rig_attach(struct rig *r)
{
    int rc = r->kind->attach(r);
    cr_assert_eq(rc, 0, "attach: %s", sm_strerror(rc));
}

/* Runs the loop until it has nothing left to wait for. */
static void rig_run(struct rig *r)
{
    r->kind->run(r);
}

/* Detaches (if still attached), frees the loop and the server; the
 * detach must have left nothing behind in the loop. */
static void rig_close_all(struct rig *r)
{
    r->kind->detach(r);
    int left = r->kind->shut(r);
    cr_assert_eq(left, 0, "the loop still holds %d handles or events after the detach", left);
    sm_server_free(r->s);
    if (r->peer_fd >= 0)
        close(r->peer_fd);
}

/* A thread that stops the server after ms unless the test ends first: a
 * broken adapter then fails the test instead of hanging it.  Stopping
 * reaches the loop through sm_server_fd, the adapter's other path. */
struct watchdog {
    sm_server *s;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done, barked, ms;
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += w->ms / 1000;
    until.tv_nsec += (long)(w->ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->lock);
    while (!w->done && pthread_cond_timedwait(&w->cond, &w->lock, &until) != ETIMEDOUT) {
    }
    if (!w->done) {
        w->barked = 1;
        sm_server_stop(w->s);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void watchdog_start(struct watchdog *w, sm_server *s, int ms)
{
    *w = (struct watchdog){ .s = s, .ms = ms };
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    cr_assert_eq(pthread_create(&w->thread, NULL, watchdog_main, w), 0);
}

/* Returns whether it had to stop the server. */
static int watchdog_end(struct watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    w->done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    return w->barked;
}

/* A client on its own thread; records, never asserts. */
struct helper {
    const char *addr;
    sm_server *s;
    int detach_first; /* send "detach" before the round trips */
    int rounds;       /* round trips that came back intact */
    int end_rc;       /* the receive after the stop: SM_ECLOSED */
    char error[200];
    pthread_t thread;
};

static void *helper_main(void *arg)
{
    struct helper *h = arg;
    sm_conn *c = NULL;
    if (sm_connect_opts(&c, h->addr, &patient) < 0) {
        snprintf(h->error, sizeof h->error, "connect: %s", sm_last_error());
        sm_server_stop(h->s);
        return NULL;
    }
    if (h->detach_first && sm_send(c, "detach", 6) < 0)
        snprintf(h->error, sizeof h->error, "send: %s", sm_last_error());
    for (int i = 0; i < 3 && !h->error[0]; i++) {
        char msg[32], got[32];
        int len = snprintf(msg, sizeof msg, "round %d", i);
        ssize_t n;
        if (sm_send(c, msg, (size_t)len) < 0 || (n = sm_recv(c, got, sizeof got)) < 0)
            snprintf(h->error, sizeof h->error, "round %d: %s", i, sm_last_error());
        else if (n == len && memcmp(got, msg, (size_t)len) == 0)
            h->rounds++;
    }
    /* From this thread, as sm_server_stop allows; the client sees the close. */
    sm_server_stop(h->s);
    char buf[16];
    h->end_rc = (int)sm_recv(c, buf, sizeof buf);
    sm_close(c);
    return NULL;
}

static void helper_start(struct helper *h, struct rig *r, int detach_first)
{
    *h = (struct helper){ .addr = r->addr, .s = r->s, .detach_first = detach_first };
    cr_assert_eq(pthread_create(&h->thread, NULL, helper_main, h), 0);
}

static void helper_check(struct helper *h)
{
    pthread_join(h->thread, NULL);
    cr_assert_str_empty(h->error, "client: %s", h->error);
    cr_assert_eq(h->rounds, 3, "round trips: %d of 3", h->rounds);
    cr_assert_eq(h->end_rc, SM_ECLOSED, "after the stop the client got %s", sm_strerror(h->end_rc));
}

/* ---- the tests, each run for both loops ---- */

#define BOTH(test)                                                                                 \
    Test(adapters, uv_##test)                                                                      \
    {                                                                                              \
        test(UV_KIND, "libuv");                                                                    \
    }                                                                                              \
    Test(adapters, event_##test)                                                                   \
    {                                                                                              \
        test(EVENT_KIND, "libevent");                                                              \
    }

static void tick(sm_server *s, uint64_t id, void *arg)
{
    struct rig *r = arg;
    (void)id;
    if (++r->ticks == 5) {
        r->ticked_at = now_ms();
        sm_server_stop(s); /* from the loop thread too */
    }
}

/* A repeating server timer runs only if the adapter arms its own timer
 * for sm_server_timeout after every run: nothing else happens here. */
static void server_timers_fire(const struct loop_kind *k, const char *lib)
{
    require(k != NULL, "the adapter", lib);
    struct rig r;
    rig_open(&r, k);
    int64_t set_at = now_ms();
    cr_assert_eq(sm_server_timer(r.s, 20, 20, tick, &r, NULL), 0);
    rig_attach(&r);
    struct watchdog w;
    watchdog_start(&w, r.s, 5000);
    rig_run(&r);
    cr_assert_not(watchdog_end(&w), "the loop never ran the server's timer (ticks: %d)", r.ticks);
    cr_assert_eq(r.ticks, 5);
    /* Each tick comes 20 ms after the one before, not sooner. */
    cr_assert_geq(r.ticked_at - set_at, 99, "5 ticks of 20 ms in %lld ms",
                  (long long)(r.ticked_at - set_at));
    /* The stop ended the loop: the adapter stopped watching by itself. */
    cr_assert_eq(k->status(&r), SM_ESTOPPED, "%s", sm_strerror(k->status(&r)));
    rig_close_all(&r);
}

BOTH(server_timers_fire)

static void note_fired(sm_server *s, uint64_t id, void *arg)
{
    (void)s;
    (void)id;
    ((struct rig *)arg)->fired = 1;
}

/* From a callback of the loop's own, outside the server's handlers. */
static void work_from_outside(struct rig *r)
{
    cr_assert_eq(sm_server_timer(r->s, 10, 0, note_fired, r, NULL), 0);
    cr_assert_eq(sm_server_send(r->s, r->peer, "pushed", 6), 0);
    cr_assert_eq(r->kind->update(r), 0);
}

static void look_and_stop(struct rig *r)
{
    struct pollfd p = { .fd = r->peer_fd, .events = POLLIN };
    r->readable = poll(&p, 1, 0) == 1;
    sm_server_stop(r->s);
}

static void outside_work_runs_after_update(const struct loop_kind *k, const char *lib)
{
    require(k != NULL, "the adapter", lib);
    struct rig r;
    rig_open(&r, k);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(sm_server_adopt(r.s, sv[0], &r.peer), 0, "%s", sm_last_error());
    r.peer_fd = sv[1];
    rig_attach(&r);
    /* Once the loop is idle (nothing for the server to do), work arrives
     * from outside; it must be done well before the look 300 ms later. */
    k->after(&r, 50, work_from_outside);
    k->after(&r, 350, look_and_stop);
    rig_run(&r);
    cr_assert(r.fired, "a server timer set outside the handlers did not fire after the update");
    cr_assert(r.readable, "a message queued outside the handlers was not sent after the update");
    uint8_t buf[16];
    cr_assert_eq(raw_recv_frame(r.peer_fd, buf, sizeof buf, IO_MS), 6);
    cr_assert_eq(memcmp(buf, "pushed", 6), 0);
    cr_assert_eq(r.closes, 1);
    cr_assert_eq(r.last_reason, SM_ESTOPPED);
    rig_close_all(&r);
}

BOTH(outside_work_runs_after_update)

/* A client served by the loop; a stop from another thread ends the loop,
 * after every client was closed; the detach then leaves nothing behind. */
static void stop_ends_the_loop(const struct loop_kind *k, const char *lib)
{
    require(k != NULL, "the adapter", lib);
    struct rig r;
    rig_open(&r, k);
    rig_attach(&r);
    struct helper h;
    helper_start(&h, &r, 0);
    rig_run(&r); /* returns once the stop made the adapter let go */
    helper_check(&h);
    cr_assert_eq(k->status(&r), SM_ESTOPPED, "%s", sm_strerror(k->status(&r)));
    cr_assert_eq(r.closes, 1);
    cr_assert_eq(r.last_reason, SM_ESTOPPED, "%s", sm_strerror(r.last_reason));
    rig_close_all(&r);
}

BOTH(stop_ends_the_loop)

/* A handler detaches the adapter: the loop ends (nothing is left in it),
 * the server is untouched and serves again under a new adapter. */
static void detach_from_a_handler(const struct loop_kind *k, const char *lib)
{
    require(k != NULL, "the adapter", lib);
    struct rig r;
    rig_open(&r, k);
    rig_attach(&r);
    struct helper h;
    helper_start(&h, &r, 1);
    struct watchdog w;
    watchdog_start(&w, r.s, 10000);
    rig_run(&r); /* ends with the detach */
    cr_assert(r.detached_in_handler);
    cr_assert_eq(r.closes, 0, "the client was closed: %s", sm_strerror(r.last_reason));
    rig_attach(&r); /* the client's round trips wait for this */
    rig_run(&r);
    cr_assert_not(watchdog_end(&w), "the loop did not end after the detach");
    helper_check(&h);
    cr_assert_eq(k->status(&r), SM_ESTOPPED);
    cr_assert_eq(r.last_reason, SM_ESTOPPED);
    rig_close_all(&r);
}

BOTH(detach_from_a_handler)

static void attach_checks_arguments(const struct loop_kind *k, const char *lib)
{
    require(k != NULL, "the adapter", lib);
    struct rig r;
    rig_open(&r, k);
#ifdef SM_TEST_LIBUV
    if (k == UV_KIND) {
        sm_uv_adapter *a = (sm_uv_adapter *)&r; /* must be overwritten */
        cr_assert_eq(sm_uv_attach(NULL, &r.uv, &a), SM_EINVAL);
        cr_assert_null(a);
        cr_assert_eq(sm_uv_attach(r.s, NULL, &a), SM_EINVAL);
        cr_assert_eq(sm_uv_attach(r.s, &r.uv, NULL), SM_EINVAL);
        cr_assert_eq(sm_uv_status(NULL), SM_EINVAL);
        cr_assert_eq(sm_uv_update(NULL), SM_EINVAL);
        sm_uv_detach(NULL);
    }
#endif
#ifdef SM_TEST_LIBEVENT
    if (k == EVENT_KIND) {
        sm_event_adapter *a = (sm_event_adapter *)&r;
        cr_assert_eq(sm_event_attach(NULL, r.base, &a), SM_EINVAL);
        cr_assert_null(a);
        cr_assert_eq(sm_event_attach(r.s, NULL, &a), SM_EINVAL);
        cr_assert_eq(sm_event_attach(r.s, r.base, NULL), SM_EINVAL);
        cr_assert_eq(sm_event_status(NULL), SM_EINVAL);
        cr_assert_eq(sm_event_update(NULL), SM_EINVAL);
        sm_event_detach(NULL);
    }
#endif
    rig_attach(&r);
    cr_assert_eq(k->status(&r), 0);
#ifdef SM_TEST_LIBUV
    if (k == UV_KIND) {
        /* libuv polls a descriptor once per loop: a second adapter is
         * refused and leaves the first one working. */
        sm_uv_adapter *twin;
        cr_assert_eq(sm_uv_attach(r.s, &r.uv, &twin), UV_EEXIST);
        cr_assert_null(twin);
    }
#endif
    struct helper h;
    helper_start(&h, &r, 0);
    rig_run(&r);
    helper_check(&h);
    rig_close_all(&r);
}

BOTH(attach_checks_arguments)

/* ======================================================================
 * Suite examples: the programs, as processes.
 * ====================================================================== */

/* Processes: tests/support/program.c. */

static char unix_path[SM_ADDRSTRLEN]; /* a socket file a test made, if any */

/* Each test's .fini: no process or socket file outlives it. */
static void end_procs_and_socket(void)
{
    end_procs();
    if (unix_path[0])
        unlink(unix_path + 5); /* "unix:" */
    unix_path[0] = '\0';
}

/* Starts a program that prints "listening on ADDR" first; ADDR to addr. */
static struct program start_listening(const char *const argv[], char addr[SM_ADDRSTRLEN],
                                      int with_stdin)
{
    struct program p = program_start(argv, with_stdin);
    expect_listening(&p, argv[0], NULL, addr);
    return p;
}

/* ---- uv-echo-server and event-echo-server ---- */

#define CLIENTS 8

static int built(const char *path)
{
    return access(path, X_OK) == 0;
}

static void echo_serves_clients_at_once(const char *prog, const char *lib)
{
    require(built(prog), prog, lib);
    const char *argv[] = { prog, "127.0.0.1:0", NULL };
    char addr[SM_ADDRSTRLEN];
    struct program srv = start_listening(argv, addr, 0);

    /* Every client sends before any reads its echo: each is answered
     * while the others wait, in one loop. */
    sm_conn *c[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        c[i] = client(addr);
    for (int round = 0; round < 3; round++) {
        char msg[64];
        for (int i = 0; i < CLIENTS; i++) {
            snprintf(msg, sizeof msg, "client %d round %d", i, round);
            send_text(c[i], msg);
        }
        for (int i = CLIENTS - 1; i >= 0; i--) {
            snprintf(msg, sizeof msg, "client %d round %d", i, round);
            expect_text(c[i], msg);
        }
    }
    round_trip(c[1], ""); /* an empty message is a message too */

    /* 1 MiB whose echo client 0 leaves unread for now: the others are
     * still served meanwhile; then it arrives whole. */
    uint8_t *big = patterned(MiB, 7);
    cr_assert_eq(sm_send(c[0], big, MiB), 0, "%s", sm_last_error());
    for (int i = 1; i < CLIENTS; i++)
        round_trip(c[i], "while 1 MiB waits");
    void *echo = NULL;
    ssize_t n = sm_recv_alloc(c[0], &echo);
    cr_assert_eq(n, (ssize_t)MiB, "%s", sm_strerror((int)n));
    cr_assert_eq(pattern_check(echo, MiB, 7), (size_t)MiB, "the 1 MiB echo differs");
    free(echo);
    free(big);

    /* SIGTERM with every client connected: exit 0, each sees the close. */
    stop_with(&srv, SIGTERM, prog);
    for (int i = 0; i < CLIENTS; i++) {
        char buf[16];
        cr_assert_eq(sm_recv(c[i], buf, sizeof buf), SM_ECLOSED, "client %d", i);
        sm_close(c[i]);
    }
}

Test(examples, uv_echo_server_serves_clients_at_once, .fini = end_procs_and_socket)
{
    echo_serves_clients_at_once(EXAMPLE("uv-echo-server"), "libuv");
}

Test(examples, event_echo_server_serves_clients_at_once, .fini = end_procs_and_socket)
{
    echo_serves_clients_at_once(EXAMPLE("event-echo-server"), "libevent");
}

Test(examples, loop_servers_exit_0_on_sigint, .fini = end_procs_and_socket)
{
    static const char *const progs[][2] = { { EXAMPLE("uv-echo-server"), "libuv" },
                                            { EXAMPLE("event-echo-server"), "libevent" } };
    for (int i = 0; i < 2; i++) {
        require(built(progs[i][0]), progs[i][0], progs[i][1]);
        const char *argv[] = { progs[i][0], "127.0.0.1:0", NULL };
        char addr[SM_ADDRSTRLEN];
        struct program srv = start_listening(argv, addr, 0);
        sm_conn *c = client(addr);
        round_trip(c, "hello");
        stop_with(&srv, SIGINT, progs[i][0]);
        char buf[16];
        cr_assert_eq(sm_recv(c, buf, sizeof buf), SM_ECLOSED);
        sm_close(c);
    }
}

Test(examples, loop_servers_refuse_bad_addresses, .fini = end_procs_and_socket)
{
    static const char *const servers[][2] = { { EXAMPLE("uv-echo-server"), "libuv" },
                                              { EXAMPLE("event-echo-server"), "libevent" } };
    char out[256];
    for (int i = 0; i < 2; i++) {
        require(built(servers[i][0]), servers[i][0], servers[i][1]);
        const char *argv[] = { servers[i][0], "no-port", NULL };
        struct program p = program_start(argv, 0);
        read_all(p.out, out, sizeof out, PROC_MS);
        expect_exit(&p, 1, servers[i][0]);
        cr_assert_str_empty(out, "%s printed '%s'", servers[i][0], out);
        cr_assert_str_not_empty(last_err, "%s said nothing on stderr", servers[i][0]);
    }
}

Test(examples, poll_client_refuses_bad_arguments, .fini = end_procs_and_socket)
{
    const char *usage[] = { EXAMPLE("poll-client"), NULL };
    struct program p = program_start(usage, 0);
    expect_exit(&p, 2, "poll-client without arguments");
    cr_assert(strstr(last_err, "usage"), "stderr: %s", last_err);
    const char *bad_listen[] = { EXAMPLE("poll-client"), "no-port", NULL };
    p = program_start(bad_listen, 0);
    expect_exit(&p, 1, "poll-client no-port");
    cr_assert_str_not_empty(last_err);
}

/* ---- poll-client ---- */

#define LINES 40

/* Which peer a "PEER: TEXT" line is from (0 or 1); TEXT to *text. */
static int reply_from(const char *line, const char *const peer[2], const char **text)
{
    for (int i = 0; i < 2; i++) {
        size_t len = strlen(peer[i]);
        if (strncmp(line, peer[i], len) == 0 && strncmp(line + len, ": ", 2) == 0) {
            *text = line + len + 2;
            return i;
        }
    }
    cr_assert_fail("a line from no peer: '%s'", line);
    return -1;
}

Test(examples, poll_client_relays_stdin_and_serves_its_own, .fini = end_procs_and_socket)
{
    /* Two echo-servers, one over TCP and one over a Unix socket. */
    char peer[2][SM_ADDRSTRLEN];
    unix_addr(unix_path, sizeof unix_path, "poll-peer");
    const char *echo_tcp[] = { EXAMPLE("echo-server"), "127.0.0.1:0", NULL };
    const char *echo_unix[] = { EXAMPLE("echo-server"), unix_path, NULL };
    struct program e0 = start_listening(echo_tcp, peer[0], 0);
    struct program e1 = start_listening(echo_unix, peer[1], 0);

    const char *argv[] = { EXAMPLE("poll-client"), "127.0.0.1:0", peer[0], peer[1], NULL };
    char mine[SM_ADDRSTRLEN];
    struct program pc = start_listening(argv, mine, 1);

    /* Its own listener serves before any line... */
    sm_conn *local = client(mine), *heavy = client(mine);
    round_trip(local, "before any line");
    /* ...and holds a 1 MiB echo for a client that reads it only later. */
    uint8_t *big = patterned(MiB, 11);
    cr_assert_eq(sm_send(heavy, big, MiB), 0, "%s", sm_last_error());

    /* Lines on stdin, with round trips to its listener between them. */
    for (int i = 1; i <= LINES; i++) {
        cr_assert_eq(put_line(pc.in, "line %d\n", i), 0);
        if (i % 10 == 0) {
            char msg[32];
            snprintf(msg, sizeof msg, "after line %d", i);
            round_trip(local, msg);
        }
    }
    /* Every reply, each peer's in order. */
    const char *const names[2] = { peer[0], peer[1] };
    int next[2] = { 1, 1 };
    for (int k = 0; k < 2 * LINES; k++) {
        char line[256], want[32];
        const char *text;
        cr_assert_geq(read_line(pc.out, line, sizeof line, PROC_MS), 0,
                      "replies stopped after %d from %s and %d from %s", next[0] - 1, peer[0],
                      next[1] - 1, peer[1]);
        int from = reply_from(line, names, &text);
        snprintf(want, sizeof want, "line %d", next[from]++);
        cr_assert_str_eq(text, want, "from %s", names[from]);
    }
    cr_assert_eq(next[0], LINES + 1);
    cr_assert_eq(next[1], LINES + 1);

    void *echo = NULL;
    cr_assert_eq(sm_recv_alloc(heavy, &echo), (ssize_t)MiB, "%s", sm_last_error());
    cr_assert_eq(pattern_check(echo, MiB, 11), (size_t)MiB, "the 1 MiB echo differs");
    free(echo);
    free(big);
    round_trip(local, "after the lines");

    /* The end of stdin: exit 0, nothing more printed, nothing on stderr. */
    cr_assert_eq(shutdown(pc.in, SHUT_WR), 0);
    char rest[256];
    read_all(pc.out, rest, sizeof rest, PROC_MS);
    cr_assert_str_empty(rest, "printed more: %s", rest);
    expect_exit(&pc, 0, "poll-client");
    cr_assert_str_empty(last_err, "stderr: %s", last_err);
    char buf[16];
    cr_assert_eq(sm_recv(local, buf, sizeof buf), SM_ECLOSED);
    sm_close(local);
    sm_close(heavy);
    stop_with(&e0, SIGTERM, "echo-server over TCP");
    stop_with(&e1, SIGTERM, "echo-server over a Unix socket");
}

/* A peer whose listener's backlog (0) is full: connects to it never
 * finish, as with a host that drops them.  Its address to addr. */
static int stuck_peer(char addr[SM_ADDRSTRLEN], int *filler)
{
    int lfd = raw_listener(addr);
    cr_assert_eq(listen(lfd, 0), 0);
    *filler = raw_client(addr);
    /* The premise: a further connect stays in progress. */
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)addr_port(addr)) };
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(probe, (struct sockaddr *)&in, sizeof in) < 0 && errno == EINPROGRESS);
    struct pollfd p = { .fd = probe, .events = POLLOUT };
    cr_assert_eq(poll(&p, 1, 200), 0, "the kernel finished a connect to a full backlog");
    close(probe);
    return lfd;
}

Test(examples, poll_client_never_waits_on_a_stuck_peer, .fini = end_procs_and_socket)
{
    char good[SM_ADDRSTRLEN], stuck[SM_ADDRSTRLEN], mine[SM_ADDRSTRLEN];
    const char *echo[] = { EXAMPLE("echo-server"), "127.0.0.1:0", NULL };
    struct program e = start_listening(echo, good, 0);
    int filler;
    int lfd = stuck_peer(stuck, &filler);

    const char *argv[] = { EXAMPLE("poll-client"), "127.0.0.1:0", good, stuck, NULL };
    struct program pc = start_listening(argv, mine, 1);
    sm_conn *local = client(mine);
    int64_t t0 = now_ms();
    cr_assert_eq(put_line(pc.in, "first\nsecond\n"), 0);
    cr_assert_eq(shutdown(pc.in, SHUT_WR), 0);

    /* The good peer answers the first line at once. */
    char line[256], want[SM_ADDRSTRLEN + 16];
    cr_assert_geq(read_line(pc.out, line, sizeof line, PROC_MS), 0, "no reply to the first line");
    snprintf(want, sizeof want, "%s: first", good);
    cr_assert_str_eq(line, want);

    /* While the stuck peer holds the first line (and so stdin waits), the
     * loop keeps serving its own listener, promptly. */
    for (int i = 0; i < 5; i++) {
        int64_t t = now_ms();
        round_trip(local, "still there?");
        cr_assert_lt(now_ms() - t, 2000, "a round trip took %lld ms", (long long)(now_ms() - t));
        sleep_ms(200);
    }
    /* After 5 s the stuck peer is dropped; the second line goes out. */
    cr_assert_geq(read_line(pc.out, line, sizeof line, PROC_MS), 0, "no reply to the second line");
    snprintf(want, sizeof want, "%s: second", good);
    cr_assert_str_eq(line, want);
    cr_assert_geq(now_ms() - t0, 4000,
                  "the second line went out before the stuck peer was dropped");

    /* End of input, a peer failed: exit 1, naming it. */
    expect_exit(&pc, 1, "poll-client");
    cr_assert(strstr(last_err, stuck) && strstr(last_err, sm_strerror(SM_ETIMEDOUT)), "stderr: %s",
              last_err);
    sm_close(local);
    close(filler);
    close(lfd);
    stop_with(&e, SIGTERM, "echo-server");
}

Test(examples, poll_client_exits_0_on_sigterm, .fini = end_procs_and_socket)
{
    char good[SM_ADDRSTRLEN], mine[SM_ADDRSTRLEN];
    const char *echo[] = { EXAMPLE("echo-server"), "127.0.0.1:0", NULL };
    struct program e = start_listening(echo, good, 0);
    const char *argv[] = { EXAMPLE("poll-client"), "127.0.0.1:0", good, NULL };
    struct program pc = start_listening(argv, mine, 1);
    sm_conn *local = client(mine);
    round_trip(local, "hello");
    cr_assert_eq(put_line(pc.in, "one\n"), 0);
    char line[256], want[SM_ADDRSTRLEN + 16];
    cr_assert_geq(read_line(pc.out, line, sizeof line, PROC_MS), 0);
    snprintf(want, sizeof want, "%s: one", good);
    cr_assert_str_eq(line, want);

    /* stdin still open, clients connected: SIGTERM ends it with 0. */
    stop_with(&pc, SIGTERM, "poll-client");
    char buf[16];
    cr_assert_eq(sm_recv(local, buf, sizeof buf), SM_ECLOSED);
    sm_close(local);
    stop_with(&e, SIGTERM, "echo-server");
}
