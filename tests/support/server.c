/*
 * The event-driven test server: sm_server_run on a thread of its own, with
 * handlers that echo, track per-connection data, run the '#' commands
 * below and log every open and close.  Handlers report what they find
 * wrong in v->problem (under v->lock); only the test's own thread asserts.
 */
#include "support.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct conn_info {
    sm_conn_id id;
    unsigned msgs;
    char peer[SM_ADDRSTRLEN];
};

static void note_problem(struct srv *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note_problem(struct srv *v, const char *fmt, ...)
{
    pthread_mutex_lock(&v->lock);
    if (!v->problem[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->problem, sizeof v->problem, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&v->lock);
}

static void reply(struct srv *v, sm_server *s, sm_conn_id id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply(struct srv *v, sm_server *s, sm_conn_id id, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        note_problem(v, "reply too long");
        return;
    }
    int rc = sm_server_send(s, id, buf, (size_t)n);
    if (rc)
        note_problem(v, "reply to %" PRIu64 ": %s", id, sm_strerror(rc));
}

static void on_open(sm_server *s, sm_conn_id id, void *arg)
{
    struct srv *v = arg;
    if (id == 0)
        note_problem(v, "on_open with id 0");
    if (v->flags & TRACK) {
        if (sm_server_data(s, id) != NULL)
            note_problem(v, "sm_server_data not NULL in on_open");
        struct conn_info *ci = calloc(1, sizeof *ci);
        if (!ci) {
            note_problem(v, "out of memory");
        } else {
            ci->id = id;
            int n = sm_server_peer(s, id, ci->peer, sizeof ci->peer);
            if (n <= 0)
                note_problem(v, "sm_server_peer in on_open: %d", n);
            int rc = sm_server_set_data(s, id, ci);
            if (rc) {
                note_problem(v, "sm_server_set_data: %d", rc);
                free(ci);
            }
        }
    }
    pthread_mutex_lock(&v->lock);
    if (v->n_open < LOG_MAX) {
        v->opens[v->n_open] = id;
        v->open_at[v->n_open] = now_ms();
    }
    v->n_open++;
    pthread_mutex_unlock(&v->lock);
}

static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    struct srv *v = arg;
    int64_t at = now_ms();
    if (v->flags & TRACK) {
        struct conn_info *ci = sm_server_data(s, id);
        if (!ci || ci->id != id)
            note_problem(v, "sm_server_data lost by on_close of %" PRIu64, id);
        free(ci);
    }
    pthread_mutex_lock(&v->lock);
    if (v->n_close < LOG_MAX)
        v->closes[v->n_close] = (struct close_ev){ id, reason, at };
    v->n_close++;
    pthread_mutex_unlock(&v->lock);
    if (v->flags & GONE_NOTICE) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "gone %" PRIu64, id);
        sm_server_broadcast(s, msg, (size_t)n, 0);
    }
}

static void do_fill(struct srv *v, sm_server *s, sm_conn_id id, unsigned size, unsigned maxq)
{
    struct fill_result f = { 0 };
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        note_problem(v, "out of memory");
        return;
    }
    for (;;) {
        memset(buf, f.k & 0xff, size);
        int rc = sm_server_send(s, id, buf, size);
        if (rc) {
            f.full_rc = rc;
            break;
        }
        if (++f.k > 100000)
            break;
    }
    size_t used = (size_t)f.k * (size + 4u);
    f.filler_len = maxq >= used + 4 ? maxq - used - 4 : 0;
    if (f.filler_len > size)
        f.filler_len = size;
    memset(buf, 0xEE, f.filler_len);
    f.filler_rc = sm_server_send(s, id, buf, f.filler_len);
    f.after_rc = sm_server_send(s, id, "", 0);
    f.done = 1;
    free(buf);
    pthread_mutex_lock(&v->lock);
    v->fill = f;
    pthread_mutex_unlock(&v->lock);
}

/* sm_server_disconnect, with its result kept for the test. */
static void disconnect_logged(struct srv *v, sm_server *s, sm_conn_id id)
{
    int rc = sm_server_disconnect(s, id);
    pthread_mutex_lock(&v->lock);
    v->disconnect_rc = rc;
    v->disconnects++;
    pthread_mutex_unlock(&v->lock);
}

/* "#ids N": the count, then at most N ids, least recently active first. */
static void cmd_ids(struct srv *v, sm_server *s, sm_conn_id id, unsigned cap)
{
    sm_conn_id ids[32];
    if (cap > 32)
        cap = 32;
    size_t total = sm_server_ids(s, ids, cap);
    char buf[1024];
    int len = snprintf(buf, sizeof buf, "n=%zu", total);
    for (size_t i = 0; i < cap && i < total; i++)
        len += snprintf(buf + len, sizeof buf - (size_t)len, " %" PRIu64, ids[i]);
    reply(v, s, id, "%s", buf);
}

static void cmd_stats(struct srv *v, sm_server *s, sm_conn_id id)
{
    sm_server_stats st;
    sm_server_get_stats(s, &st);
    reply(v, s, id, "conns=%zu accepted=%" PRIu64 " rejected=%" PRIu64 " pauses=%" PRIu64, st.conns,
          st.accepted, st.rejected, st.accept_pauses);
}

static void cmd_info(struct srv *v, sm_server *s, sm_conn_id id)
{
    struct conn_info *ci = sm_server_data(s, id);
    if (ci)
        reply(v, s, id, "peer=%s msgs=%u", ci->peer, ci->msgs);
    else
        reply(v, s, id, "no data");
}

/* sm_server_peer with room, with too little and with none. */
static void cmd_peer(struct srv *v, sm_server *s, sm_conn_id id)
{
    char peer[SM_ADDRSTRLEN], tiny[4];
    int n = sm_server_peer(s, id, peer, sizeof peer);
    int short_rc = sm_server_peer(s, id, tiny, sizeof tiny);
    int null_rc = sm_server_peer(s, id, NULL, 0);
    reply(v, s, id, "peer=%s n=%d short=%d null=%d", n > 0 ? peer : "?", n, short_rc, null_rc);
}

/* "#bigbye COUNT SIZE": queues COUNT messages of SIZE bytes, then
 * disconnects (which must deliver them first). */
static void cmd_bigbye(struct srv *v, sm_server *s, sm_conn_id id, unsigned count, unsigned size)
{
    uint8_t *buf = malloc(size ? size : 1);
    for (unsigned i = 0; buf && i < count; i++) {
        memset(buf, (int)((i * 3 + 1) & 0xff), size);
        int rc = sm_server_send(s, id, buf, size);
        if (rc)
            note_problem(v, "bigbye send %u: %s", i, sm_strerror(rc));
    }
    free(buf);
    disconnect_logged(v, s, id);
}

/* "#sendto ID TEXT" and "#bcast EXCEPT TEXT": the text, and the result. */
static int cmd_addressed(struct srv *v, sm_server *s, sm_conn_id id, const char *cmd)
{
    uint64_t target;
    int off = 0;
    if (sscanf(cmd, "#sendto %" SCNu64 " %n", &target, &off) == 1 && off > 0) {
        const char *text = cmd + off;
        reply(v, s, id, "rc %d", sm_server_send(s, target, text, strlen(text)));
    } else if (sscanf(cmd, "#bcast %" SCNu64 " %n", &target, &off) == 1 && off > 0) {
        const char *text = cmd + off;
        reply(v, s, id, "count %d", sm_server_broadcast(s, text, strlen(text), target));
    } else {
        return 0;
    }
    return 1;
}

/* Commands start with '#'; anything else is echoed when ECHO is set. */
static void command(struct srv *v, sm_server *s, sm_conn_id id, const char *cmd)
{
    unsigned a, b;
    if (strcmp(cmd, "#ping") == 0) {
        reply(v, s, id, "pong");
    } else if (strcmp(cmd, "#whoami") == 0) {
        reply(v, s, id, "%" PRIu64, id);
    } else if (cmd_addressed(v, s, id, cmd)) {
        /* done */
    } else if (sscanf(cmd, "#ids %u", &a) == 1) {
        cmd_ids(v, s, id, a);
    } else if (strcmp(cmd, "#stats") == 0) {
        cmd_stats(v, s, id);
    } else if (strcmp(cmd, "#info") == 0) {
        cmd_info(v, s, id);
    } else if (strcmp(cmd, "#peer") == 0) {
        cmd_peer(v, s, id);
    } else if (strncmp(cmd, "#bye ", 5) == 0) {
        reply(v, s, id, "%s", cmd + 5);
        disconnect_logged(v, s, id);
    } else if (sscanf(cmd, "#bigbye %u %u", &a, &b) == 2) {
        cmd_bigbye(v, s, id, a, b);
    } else if (sscanf(cmd, "#fill %u %u", &a, &b) == 2) {
        do_fill(v, s, id, a, b);
    } else if (v->flags & ECHO) {
        int rc = sm_server_send(s, id, cmd, strlen(cmd));
        if (rc)
            note_problem(v, "echo of a command: %s", sm_strerror(rc));
    }
}

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    struct srv *v = arg;
    atomic_fetch_add(&v->messages, 1);
    if (v->flags & TRACK) {
        struct conn_info *ci = sm_server_data(s, id);
        if (!ci || ci->id != id)
            note_problem(v, "sm_server_data lost in on_message");
        else
            ci->msgs++;
    }
    const char *text = msg;
    if (len > 0 && len < 256 && text[0] == '#' && !memchr(text, '\0', len)) {
        char cmd[256];
        memcpy(cmd, text, len);
        cmd[len] = '\0';
        command(v, s, id, cmd);
        return;
    }
    if (v->flags & ECHO) {
        int rc = sm_server_send(s, id, msg, len);
        if (rc == SM_EFULL)
            atomic_fetch_add(&v->efull, 1);
        else if (rc)
            note_problem(v, "echo: %s", sm_strerror(rc));
    }
}

/* Non-asserting core, usable in forked children. */
int srv_open(struct srv **out, const sm_server_options *opt, int flags)
{
    return srv_open_at(out, "127.0.0.1:0", opt, flags);
}

int srv_open_at(struct srv **out, const char *addr, const sm_server_options *opt, int flags)
{
    struct srv *v = calloc(1, sizeof *v);
    if (!v)
        return SM_ENOMEM;
    pthread_mutex_init(&v->lock, NULL);
    v->flags = flags;
    atomic_init(&v->done, 0);
    atomic_init(&v->rc, 0);
    atomic_init(&v->messages, 0);
    atomic_init(&v->efull, 0);
    sm_server_handlers h = { .on_open = on_open, .on_message = on_message, .on_close = on_close };
    int rc = sm_server_new(&v->s, &h, opt, v);
    if (rc == 0) {
        rc = sm_server_listen(v->s, addr);
        if (rc == 0)
            rc = sm_server_addr(v->s, 0, v->addr, sizeof v->addr);
        else if (rc > 0)
            rc = SM_EINVAL; /* the first listener must be index 0 */
    }
    if (rc < 0) {
        sm_server_free(v->s);
        pthread_mutex_destroy(&v->lock);
        free(v);
        return rc;
    }
    *out = v;
    return 0;
}

static void *run_main(void *arg)
{
    struct srv *v = arg;
    atomic_store(&v->rc, sm_server_run(v->s));
    atomic_store(&v->done, 1);
    return NULL;
}

int srv_start(struct srv *v)
{
    atomic_store(&v->done, 0);
    int rc = pthread_create(&v->thread, NULL, run_main, v);
    if (rc == 0)
        v->started = 1;
    return -rc;
}

/* Waits for sm_server_run to return and joins; its rc, or 1 if it did
 * not return within timeout_ms (the thread is then left running). */
int srv_join(struct srv *v, int timeout_ms)
{
    if (!v->started)
        return 0;
    int64_t end = now_ms() + timeout_ms;
    while (!atomic_load(&v->done)) {
        if (now_ms() >= end)
            return 1;
        sleep_ms(1);
    }
    pthread_join(v->thread, NULL);
    v->started = 0;
    return atomic_load(&v->rc);
}

int srv_halt(struct srv *v, int timeout_ms)
{
    if (!v->started)
        return 0;
    sm_server_stop(v->s);
    return srv_join(v, timeout_ms);
}

void srv_destroy(struct srv *v)
{
    if (v->started && srv_halt(v, WAIT_MS) == 1)
        return; /* still running: freeing it would crash the thread */
    sm_server_free(v->s);
    pthread_mutex_destroy(&v->lock);
    free(v);
}

/* Asserting wrappers for the tests themselves. */
struct srv *server_new_only(const sm_server_options *opt, int flags)
{
    return server_new_at("127.0.0.1:0", opt, flags);
}

struct srv *server_new_at(const char *addr, const sm_server_options *opt, int flags)
{
    struct srv *v = NULL;
    int rc = srv_open_at(&v, addr, opt, flags);
    cr_assert_eq(rc, 0, "server on %s: %s", addr, sm_last_error());
    return v;
}

void server_start(struct srv *v)
{
    cr_assert_eq(srv_start(v), 0, "pthread_create");
}

struct srv *server_up(const sm_server_options *opt, int flags)
{
    return server_up_at("127.0.0.1:0", opt, flags);
}

struct srv *server_up_at(const char *addr, const sm_server_options *opt, int flags)
{
    struct srv *v = server_new_at(addr, opt, flags);
    server_start(v);
    return v;
}

void server_check(struct srv *v)
{
    pthread_mutex_lock(&v->lock);
    char problem[sizeof v->problem];
    memcpy(problem, v->problem, sizeof problem);
    pthread_mutex_unlock(&v->lock);
    cr_assert(problem[0] == '\0', "a handler saw: %s", problem);
}

void server_halt(struct srv *v)
{
    int rc = srv_halt(v, WAIT_MS);
    cr_assert_neq(rc, 1, "sm_server_run did not return within %d ms of sm_server_stop", WAIT_MS);
    cr_assert_eq(rc, 0, "sm_server_run returned %d (%s)", rc, sm_strerror(rc));
    server_check(v);
}

void server_down(struct srv *v)
{
    server_halt(v);
    srv_destroy(v);
}

size_t srv_count(struct srv *v, int closes)
{
    pthread_mutex_lock(&v->lock);
    size_t n = closes ? v->n_close : v->n_open;
    pthread_mutex_unlock(&v->lock);
    return n;
}

int wait_count(struct srv *v, int closes, size_t n, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (srv_count(v, closes) < n) {
        if (now_ms() >= end)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

sm_conn_id srv_open_id(struct srv *v, size_t i, int64_t *at)
{
    pthread_mutex_lock(&v->lock);
    sm_conn_id id = i < v->n_open && i < LOG_MAX ? v->opens[i] : 0;
    if (at)
        *at = id ? v->open_at[i] : 0;
    pthread_mutex_unlock(&v->lock);
    return id;
}

int srv_closed(struct srv *v, sm_conn_id id, struct close_ev *out)
{
    int found = 0;
    pthread_mutex_lock(&v->lock);
    for (size_t i = 0; i < v->n_close && i < LOG_MAX && !found; i++)
        if (v->closes[i].id == id) {
            found = 1;
            if (out)
                *out = v->closes[i];
        }
    pthread_mutex_unlock(&v->lock);
    return found;
}

int wait_closed(struct srv *v, sm_conn_id id, int timeout_ms, struct close_ev *out)
{
    int64_t end = now_ms() + timeout_ms;
    while (!srv_closed(v, id, out)) {
        if (now_ms() >= end)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

/* Clients of the command language. */

void ping(sm_conn *c)
{
    char buf[64];
    ask(c, "#ping", buf, sizeof buf);
    cr_assert_str_eq(buf, "pong");
}

sm_conn_id ask_id(sm_conn *c)
{
    char buf[64], *end;
    ask(c, "#whoami", buf, sizeof buf);
    sm_conn_id id = strtoull(buf, &end, 10);
    cr_assert(*end == '\0' && id != 0, "whoami answered '%s'", buf);
    return id;
}

struct stats_reply ask_stats(sm_conn *c)
{
    char buf[256];
    struct stats_reply st;
    ask(c, "#stats", buf, sizeof buf);
    int n = sscanf(buf, "conns=%zu accepted=%" SCNu64 " rejected=%" SCNu64 " pauses=%" SCNu64,
                   &st.conns, &st.accepted, &st.rejected, &st.pauses);
    cr_assert_eq(n, 4, "stats answered '%s'", buf);
    return st;
}

/* A server with one well-behaved client. */
void pair_up(struct pair *p, const sm_server_options *o, int flags)
{
    p->v = server_up(o, flags);
    p->good = client_to(p->v->addr);
    p->good_id = ask_id(p->good);
}

/* A raw client and its id on the server. */
int pair_raw(struct pair *p, sm_conn_id *id)
{
    size_t before = srv_count(p->v, 0);
    int fd = raw_client(p->v->addr);
    cr_assert(wait_count(p->v, 0, before + 1, WAIT_MS));
    *id = srv_open_id(p->v, before, NULL);
    cr_assert_neq(*id, 0);
    return fd;
}

void expect_reason(struct pair *p, sm_conn_id id, int want)
{
    struct close_ev ev = { 0 };
    cr_assert(wait_closed(p->v, id, WAIT_MS, &ev), "the connection was not closed");
    cr_assert_eq(ev.reason, want, "on_close reason %d (%s), expected %d (%s)", ev.reason,
                 sm_strerror(ev.reason), want, sm_strerror(want));
}

/* The other client is untouched and still served. */
void good_still_served(struct pair *p)
{
    char msg[64];
    snprintf(msg, sizeof msg, "still here at %" PRId64, now_ms());
    send_text(p->good, msg);
    expect_text(p->good, msg);
    cr_assert_not(srv_closed(p->v, p->good_id, NULL), "the well-behaved client was closed");
}

void pair_down(struct pair *p)
{
    sm_close(p->good);
    server_down(p->v);
}

/* For a bare server: every message back to its sender.  A send that
 * fails is not reported (the peer may be gone). */
void echo_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

/* A bare server's loop, for servers without the log's handlers. */
void *idle_run(void *arg)
{
    struct idle_srv *x = arg;
    sm_server_run(x->s);
    atomic_store(&x->done, 1);
    return NULL;
}

void idle_start(struct idle_srv *x, sm_server *s, pthread_t *t)
{
    x->s = s;
    atomic_init(&x->opens, 0);
    atomic_init(&x->done, 0);
    cr_assert_eq(pthread_create(t, NULL, idle_run, x), 0, "pthread_create");
}
