/*
 * The event-driven server under load it must bound: max_queue and
 * SM_EFULL, idle timeouts, max_conns, and the memory an idle connection
 * costs (measured in a forked server child, so its RSS is its own).
 * Clients that never read are in test_hostile.c.  Suite "server".
 */
#include "support/support.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Queue limits                                                        */
/* ------------------------------------------------------------------ */

#define FILL_SIZE 8192u
#define FILL_MAXQ 100000u

Test(server, send_beyond_max_queue_is_efull_and_queues_nothing, .timeout = 10)
{
    sm_server_options o = { .max_queue = FILL_MAXQ };
    struct srv *v = server_up(&o, ECHO);
    sm_conn *c = client_to(v->addr);
    ping(c);
    char req[64];
    snprintf(req, sizeof req, "#fill %u %u", FILL_SIZE, FILL_MAXQ);
    send_text(c, req);
    struct fill_result f = { 0 };
    for (int64_t end = now_ms() + WAIT_MS; !f.done && now_ms() < end; sleep_ms(1)) {
        pthread_mutex_lock(&v->lock);
        f = v->fill;
        pthread_mutex_unlock(&v->lock);
    }
    cr_assert(f.done, "the fill command did not run");
    /* Nothing was written between the sends: the queue held k frames. */
    int k = (int)(FILL_MAXQ / (FILL_SIZE + 4));
    size_t filler = FILL_MAXQ - (size_t)k * (FILL_SIZE + 4) - 4;
    cr_assert_eq(f.k, k, "%d sends of %u bytes fitted in max_queue %u, expected %d", f.k, FILL_SIZE,
                 FILL_MAXQ, k);
    cr_assert_eq(f.full_rc, SM_EFULL, "%s", sm_strerror(f.full_rc));
    cr_assert_eq(f.filler_len, filler);
    cr_assert_eq(f.filler_rc, 0, "a queue of exactly max_queue is allowed: %s",
                 sm_strerror(f.filler_rc));
    cr_assert_eq(f.after_rc, SM_EFULL, "an empty message still takes a header");

    /* The client gets the k messages and the filler, and nothing else. */
    uint8_t *got = malloc(FILL_SIZE);
    cr_assert_not_null(got);
    for (int i = 0; i < k; i++) {
        ssize_t n = sm_recv(c, got, FILL_SIZE);
        cr_assert_eq(n, (ssize_t)FILL_SIZE, "message %d: %zd", i, n);
        cr_assert(got[0] == (uint8_t)i && got[FILL_SIZE - 1] == (uint8_t)i, "message %d", i);
    }
    ssize_t n = sm_recv(c, got, FILL_SIZE);
    cr_assert_eq(n, (ssize_t)filler, "filler: %zd", n);
    cr_assert(filler == 0 || (got[0] == 0xEE && got[filler - 1] == 0xEE));
    free(got);
    expect_silence(c, 300);
    ping(c);
    sm_close(c);
    server_down(v);
}

/* ------------------------------------------------------------------ */
/* Idle timeout, max_conns                                             */
/* ------------------------------------------------------------------ */

Test(server, idle_timeout_closes_only_silent_clients, .timeout = 10)
{
    sm_server_options o = { .idle_timeout_ms = 200 };
    struct srv *v = server_up(&o, ECHO);
    sm_conn *active = client_to(v->addr);
    sm_conn_id active_id = ask_id(active);
    int64_t before_connect = now_ms();
    sm_conn *silent = client_to(v->addr);
    cr_assert(wait_count(v, 0, 2, WAIT_MS));
    sm_conn_id silent_id = srv_open_id(v, 1, NULL);
    for (int i = 0; i < 16; i++) {
        ping(active);
        sleep_ms(50);
    }
    struct close_ev ev = { 0 };
    cr_assert(srv_closed(v, silent_id, &ev), "the silent client is still open after 800 ms");
    cr_assert_eq(ev.reason, SM_ETIMEDOUT, "%s", sm_strerror(ev.reason));
    cr_assert_geq(ev.at_ms - before_connect, 195, "closed after %" PRId64 " ms",
                  ev.at_ms - before_connect);
    cr_assert_lt(ev.at_ms - before_connect, 700, "closed after %" PRId64 " ms",
                 ev.at_ms - before_connect);
    cr_assert_not(srv_closed(v, active_id, NULL), "the active client was closed");
    expect_eof(silent);
    /* Silent from now on, the other one goes too. */
    cr_assert(wait_closed(v, active_id, 2000, &ev));
    cr_assert_eq(ev.reason, SM_ETIMEDOUT);
    expect_eof(active);
    sm_close(silent);
    sm_close(active);
    server_down(v);
}

/* A message queued from on_close of an idle client must go out as soon as
 * the socket takes it, not wait for some unrelated event. */
Test(server, message_queued_when_an_idle_client_expires_is_sent_at_once, .timeout = 10)
{
    sm_server_options o = { .idle_timeout_ms = 400 };
    struct srv *v = server_up(&o, ECHO | GONE_NOTICE);
    int64_t opened;
    sm_conn *silent = client_to(v->addr);
    cr_assert(wait_count(v, 0, 1, WAIT_MS));
    sm_conn_id silent_id = srv_open_id(v, 0, &opened);
    sm_conn *active = client_to(v->addr);
    ping(active);
    /* The active client's own expiry comes 250 ms after the silent one's. */
    int64_t wait = opened + 250 - now_ms();
    if (wait > 0)
        sleep_ms((int)wait);
    ping(active);
    char buf[64], want[64];
    recv_text(active, buf, sizeof buf);
    int64_t got_at = now_ms();
    snprintf(want, sizeof want, "gone %" PRIu64, silent_id);
    cr_assert_str_eq(buf, want);
    struct close_ev ev = { 0 };
    cr_assert(srv_closed(v, silent_id, &ev));
    cr_assert_eq(ev.reason, SM_ETIMEDOUT);
    cr_assert_lt(got_at - ev.at_ms, 150,
                 "the notice queued in on_close(SM_ETIMEDOUT) reached the client %" PRId64
                 " ms later: sm_server_run does not flush after expire_idle",
                 got_at - ev.at_ms);
    sm_close(silent);
    sm_close(active);
    server_down(v);
}

Test(server, max_conns_accepts_and_closes_extra_clients, .timeout = 10)
{
    sm_server_options o = { .max_conns = 3 };
    struct srv *v = server_up(&o, ECHO);
    sm_conn *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = client_to(v->addr);
        ping(c[i]);
    }
    for (int i = 0; i < 2; i++) {
        sm_conn *x = client_to(v->addr);
        expect_eof(x);
        sm_close(x);
    }
    struct stats_reply st = ask_stats(c[0]);
    cr_assert_eq(st.conns, 3);
    cr_assert_eq(st.accepted, 5);
    cr_assert_eq(st.rejected, 2);
    cr_assert_eq(srv_count(v, 0), 3, "a rejected client never reaches on_open");
    cr_assert_eq(srv_count(v, 1), 0);
    /* Room again once one leaves. */
    sm_close(c[2]);
    cr_assert(wait_count(v, 1, 1, WAIT_MS));
    c[2] = client_to(v->addr);
    ping(c[2]);
    st = ask_stats(c[2]);
    cr_assert_eq(st.conns, 3);
    cr_assert_eq(st.accepted, 6);
    cr_assert_eq(st.rejected, 2);
    for (int i = 0; i < 3; i++)
        sm_close(c[i]);
    server_down(v);
}

/* ------------------------------------------------------------------ */
/* Memory per idle connection (server in a child: its RSS is its own)  */
/* ------------------------------------------------------------------ */

/* README promises this: under 1 KiB with 2,000 connections (measured
 * about 0.1-0.2 KiB, about 0.3 KiB under AddressSanitizer). */
#define IDLE_CLIENTS 2000
#define IDLE_BOUND_BYTES 1024.0

static void idle_on_open(sm_server *s, sm_conn_id id, void *arg)
{
    (void)s;
    (void)id;
    atomic_fetch_add(&((struct idle_srv *)arg)->opens, 1);
}

static void idle_on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

static int wait_opens(struct idle_srv *x, int n, int timeout_ms)
{
    for (int64_t end = now_ms() + timeout_ms; atomic_load(&x->opens) < n; sleep_ms(2))
        if (now_ms() >= end)
            return 0;
    return 1;
}

static int idle_child(int cmd, int rep)
{
    static struct idle_srv x;
    sm_server_handlers h = { .on_open = idle_on_open, .on_message = idle_on_message };
    char addr[SM_ADDRSTRLEN], line[64];
    atomic_init(&x.opens, 0);
    atomic_init(&x.done, 0);
    if (sm_server_new(&x.s, &h, NULL, &x) != 0 || sm_server_listen(x.s, "127.0.0.1:0") != 0 ||
        sm_server_addr(x.s, 0, addr, sizeof addr) < 0)
        return 10;
    pthread_t t;
    if (pthread_create(&t, NULL, idle_run, &x) != 0)
        return 11;
    put_line(rep, "addr %s\n", addr);
    int code = 0;
    if (read_line(cmd, line, sizeof line, 15000) < 0 || strcmp(line, "base") != 0 ||
        !wait_opens(&x, 1, WAIT_MS)) {
        code = 12;
    } else {
        sleep_ms(100);
        put_line(rep, "rss %ld\n", rss_bytes());
        if (read_line(cmd, line, sizeof line, 15000) < 0 || strcmp(line, "measure") != 0 ||
            !wait_opens(&x, 1 + IDLE_CLIENTS, 10000)) {
            code = 13;
        } else {
            sleep_ms(100);
            put_line(rep, "rss %ld\n", rss_bytes());
            if (read_line(cmd, line, sizeof line, 15000) < 0 || strcmp(line, "stop") != 0)
                code = 14;
        }
    }
    sm_server_stop(x.s);
    for (int64_t end = now_ms() + WAIT_MS; !atomic_load(&x.done); sleep_ms(1))
        if (now_ms() >= end)
            return 15;
    pthread_join(t, NULL);
    sm_server_free(x.s);
    return code;
}

static void idle_parent(int cmd, int rep, int *fds, long *rss, char *fail, size_t cap)
{
    char line[256], addr[SM_ADDRSTRLEN];
    if (read_line(rep, line, sizeof line, WAIT_MS) < 0 || sscanf(line, "addr %127s", addr) != 1)
        FAIL("no address from the child");
    /* One client warms the server up: its scratch buffer, a partial
     * frame, a queue; one-time costs land in the baseline. */
    int warm = raw_connect(addr);
    if (warm < 0)
        FAIL("connect: %s", strerror(-warm));
    static uint8_t msg[60000], got[60000];
    static const size_t sizes[] = { 10, 1000, sizeof msg, 5 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        memset(msg, (int)i + 1, sizes[i]);
        if (raw_send_frame(warm, msg, sizes[i]) != 0 ||
            raw_recv_frame(warm, got, sizeof got, WAIT_MS) != (ssize_t)sizes[i] ||
            memcmp(got, msg, sizes[i]) != 0) {
            close(warm);
            FAIL("warm-up echo %zu", i);
        }
    }
    if (put_line(cmd, "base\n") < 0 || read_line(rep, line, sizeof line, WAIT_MS) < 0 ||
        sscanf(line, "rss %ld", &rss[0]) != 1) {
        close(warm);
        FAIL("no baseline from the child");
    }
    for (int i = 0; i < IDLE_CLIENTS; i++) {
        fds[i] = raw_connect(addr);
        if (fds[i] < 0) {
            close(warm);
            FAIL("connect %d: %s", i, strerror(-fds[i]));
        }
    }
    if (put_line(cmd, "measure\n") < 0 || read_line(rep, line, sizeof line, 15000) < 0 ||
        sscanf(line, "rss %ld", &rss[1]) != 1) {
        close(warm);
        FAIL("no measurement from the child");
    }
    put_line(cmd, "stop\n");
    close(warm);
}

Test(server, idle_connections_cost_little_memory, .timeout = 20)
{
    int cmd, rep, status;
    int *fds = malloc(IDLE_CLIENTS * sizeof *fds);
    cr_assert_not_null(fds);
    for (int i = 0; i < IDLE_CLIENTS; i++)
        fds[i] = -1;
    pid_t pid = fork_child(&cmd, &rep, idle_child);
    char fail[256] = "";
    long rss[2] = { -1, -1 };
    idle_parent(cmd, rep, fds, rss, fail, sizeof fail);
    for (int i = 0; i < IDLE_CLIENTS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    close(cmd);
    int exited = reap(pid, 10000, &status);
    close(rep);
    cr_assert(fail[0] == '\0', "%s", fail);
    cr_assert(exited && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the server child failed (status %#x)", status);
    double per = (double)(rss[1] - rss[0]) / IDLE_CLIENTS;
    cr_log_info("server RSS per idle connection: %.0f bytes (%ld KiB for %d)%s", per,
                (rss[1] - rss[0]) >> 10, IDLE_CLIENTS, UNDER_SANITIZER ? " [sanitizer build]" : "");
    fprintf(stderr, "server RSS per idle connection: %.0f bytes\n", per);
    cr_assert(rss[0] > 0 && rss[1] > 0);
    cr_assert_lt(per, IDLE_BOUND_BYTES, "%.0f bytes per idle connection", per);
}
