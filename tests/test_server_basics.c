/*
 * The event-driven server (sm_server_*), the basics: many clients, several
 * listeners, sending by id and broadcasting, ids, per-connection data and
 * stats, disconnecting, stopping and running again.  A thread runs the
 * test server (tests/support/server.c) and the test drives it with
 * blocking clients.  Suite "server".
 */
#include "support/support.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Many clients, listeners, ids                                        */
/* ------------------------------------------------------------------ */

#define MANY_CLIENTS 1000
#define MANY_ROUNDS 3

Test(server, thousand_concurrent_clients_echo_rounds, .timeout = 20)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn **c = calloc(MANY_CLIENTS, sizeof *c);
    uint8_t *want = malloc(PAYLOAD_MAX), *got = malloc(PAYLOAD_MAX);
    cr_assert(c && want && got);
    for (int i = 0; i < MANY_CLIENTS; i++)
        c[i] = client_to(v->addr);
    for (int round = 0; round < MANY_ROUNDS; round++) {
        for (int i = 0; i < MANY_CLIENTS; i++) {
            size_t len = make_payload(want, i, round);
            int rc = sm_send(c[i], want, len);
            cr_assert_eq(rc, 0, "client %d round %d send: %s", i, round, sm_strerror(rc));
        }
        for (int i = 0; i < MANY_CLIENTS; i++) {
            size_t len = make_payload(want, i, round);
            ssize_t n = sm_recv(c[i], got, PAYLOAD_MAX);
            cr_assert_eq(n, (ssize_t)len, "client %d round %d: received %zd (%s)", i, round, n,
                         n < 0 ? sm_strerror((int)n) : "wrong length");
            cr_assert(memcmp(got, want, len) == 0, "client %d round %d: wrong content", i, round);
        }
    }
    struct stats_reply st = ask_stats(c[0]);
    cr_assert_eq(st.conns, MANY_CLIENTS);
    cr_assert_eq(st.accepted, MANY_CLIENTS);
    cr_assert_eq(atomic_load(&v->messages), (uint64_t)MANY_CLIENTS * MANY_ROUNDS + 1);
    for (int i = 0; i < MANY_CLIENTS; i++)
        sm_close(c[i]);
    cr_assert(wait_count(v, 1, MANY_CLIENTS, 10000), "only %zu of %d closes seen", srv_count(v, 1),
              MANY_CLIENTS);
    cr_assert_eq(srv_count(v, 0), MANY_CLIENTS);
    server_down(v);
    free(c);
    free(want);
    free(got);
}

Test(server, two_tcp_listeners_a_unix_one_and_ipv6, .timeout = 10)
{
    struct srv *v = server_new_only(NULL, ECHO | TRACK);
    char path[108], addr[4][SM_ADDRSTRLEN], unix_addr[128], buf[256];
    snprintf(path, sizeof path, "/tmp/sockmsg-test-server-%ld.sock", (long)getpid());
    unlink(path);
    snprintf(unix_addr, sizeof unix_addr, "unix:%s", path);
    cr_assert_eq(sm_server_listen(v->s, "127.0.0.1:0"), 1);
    cr_assert_eq(sm_server_listen(v->s, unix_addr), 2, "%s", sm_last_error());
    cr_assert_eq(sm_server_listen(v->s, "[::1]:0"), 3, "%s", sm_last_error());
    for (int i = 0; i < 4; i++) {
        int n = sm_server_addr(v->s, i, addr[i], sizeof addr[i]);
        cr_assert(n > 0 && (size_t)n == strlen(addr[i]), "sm_server_addr(%d) = %d", i, n);
    }
    cr_assert_str_eq(addr[0], v->addr);
    cr_assert(strncmp(addr[0], "127.0.0.1:", 10) == 0, "%s", addr[0]);
    cr_assert(strncmp(addr[1], "127.0.0.1:", 10) == 0, "%s", addr[1]);
    int port0 = atoi(addr[0] + 10), port1 = atoi(addr[1] + 10);
    cr_assert(port0 > 0 && port1 > 0 && port0 != port1, "ports %d and %d", port0, port1);
    cr_assert_str_eq(addr[2], unix_addr);
    cr_assert(strncmp(addr[3], "[::1]:", 6) == 0 && atoi(addr[3] + 6) > 0, "%s", addr[3]);
    cr_assert_eq(sm_server_addr(v->s, 4, buf, sizeof buf), SM_EINVAL);
    cr_assert_eq(sm_server_addr(v->s, -1, buf, sizeof buf), SM_EINVAL);
    cr_assert_eq(sm_server_addr(v->s, 0, buf, 5), SM_EINVAL);
    cr_assert_eq(sm_server_addr(v->s, 0, NULL, 0), SM_EINVAL);
    server_start(v);

    sm_conn *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = client_to(addr[i]);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 4; i++) {
            char msg[64];
            snprintf(msg, sizeof msg, "via listener %d, round %d", i, round);
            send_text(c[i], msg);
            expect_text(c[i], msg);
        }
    for (int i = 0; i < 2; i++) {
        char local[64], want[128];
        local_addr_of(c[i], local, sizeof local);
        snprintf(want, sizeof want, "peer=%s msgs=3", local);
        ask(c[i], "#info", buf, sizeof buf);
        cr_assert_str_eq(buf, want);
    }
    ask(c[2], "#info", buf, sizeof buf);
    cr_assert_str_eq(buf, "peer=unix: msgs=3", "unix client: %s", buf);
    ask(c[3], "#info", buf, sizeof buf);
    cr_assert(strncmp(buf, "peer=[::1]:", 11) == 0, "IPv6 client: %s", buf);
    struct stats_reply st = ask_stats(c[0]);
    cr_assert_eq(st.conns, 4);
    cr_assert_eq(st.accepted, 4);
    for (int i = 0; i < 4; i++)
        sm_close(c[i]);
    cr_assert(wait_count(v, 1, 4, WAIT_MS));
    server_down(v);
    cr_assert(access(path, F_OK) != 0 && errno == ENOENT, "%s left behind", path);
}

/* from has the server send text to the client with id to ("#sendto"); the
 * server's sm_server_send must return want_rc. */
static void sendto_via(sm_conn *from, sm_conn_id to, const char *text, int want_rc)
{
    char req[128], got[64], want[64];
    snprintf(req, sizeof req, "#sendto %" PRIu64 " %s", to, text);
    snprintf(want, sizeof want, "rc %d", want_rc);
    ask(from, req, got, sizeof got);
    cr_assert_str_eq(got, want, "#sendto %" PRIu64 ": %s", to, got);
}

Test(server, send_to_one_client_by_id, .timeout = 10)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *a = client_to(v->addr), *b = client_to(v->addr), *c = client_to(v->addr);
    sm_conn_id ida = ask_id(a), idb = ask_id(b), idc = ask_id(c);
    cr_assert(ida != idb && idb != idc && ida != idc);
    char req[128];

    sendto_via(b, ida, "hello a", 0);
    expect_text(a, "hello a");
    sendto_via(a, idc, "from a to c", 0);
    expect_text(c, "from a to c");
    /* To oneself: the message is queued before the reply. */
    snprintf(req, sizeof req, "#sendto %" PRIu64 " to myself", idb);
    send_text(b, req);
    expect_text(b, "to myself");
    expect_text(b, "rc 0");
    /* Only the addressed clients got anything. */
    expect_silence(a, 100);
    expect_silence(b, 100);
    expect_silence(c, 100);
    sm_close(a);
    sm_close(b);
    sm_close(c);
    server_down(v);
}

Test(server, broadcast_with_and_without_except, .timeout = 10)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *c[4];
    sm_conn_id id[4];
    char req[128];
    for (int i = 0; i < 4; i++) {
        c[i] = client_to(v->addr);
        id[i] = ask_id(c[i]);
    }
    snprintf(req, sizeof req, "#bcast %" PRIu64 " news one", id[0]);
    send_text(c[0], req);
    expect_text(c[0], "count 3");
    for (int i = 1; i < 4; i++)
        expect_text(c[i], "news one");

    send_text(c[1], "#bcast 0 news two");
    for (int i = 0; i < 4; i++)
        expect_text(c[i], "news two");
    expect_text(c[1], "count 4");

    /* An except that matches nobody excludes nobody. */
    send_text(c[2], "#bcast 99 news three");
    for (int i = 0; i < 4; i++)
        expect_text(c[i], "news three");
    expect_text(c[2], "count 4");
    for (int i = 0; i < 4; i++)
        expect_silence(c[i], 50);

    /* A closed client is not counted. */
    sm_close(c[3]);
    cr_assert(wait_closed(v, id[3], WAIT_MS, NULL));
    send_text(c[0], "#bcast 0 news four");
    for (int i = 0; i < 3; i++)
        expect_text(c[i], "news four");
    expect_text(c[0], "count 3");
    for (int i = 0; i < 3; i++)
        sm_close(c[i]);
    server_down(v);
}

static int cmp_id(const void *a, const void *b)
{
    sm_conn_id x = *(const sm_conn_id *)a, y = *(const sm_conn_id *)b;
    return x < y ? -1 : x > y;
}

#define ID_CLIENTS 300

Test(server, ids_are_unique_and_never_reused, .timeout = 15)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *keep = client_to(v->addr);
    sm_conn_id ids[ID_CLIENTS + 2];
    ids[0] = ask_id(keep);
    /* One at a time, each gone before the next comes, so the server's
     * descriptor numbers are recycled while ids must not be. */
    for (int i = 1; i <= ID_CLIENTS; i++) {
        sm_conn *c = client_to(v->addr);
        ids[i] = ask_id(c);
        sm_close(c);
        cr_assert(wait_closed(v, ids[i], WAIT_MS, NULL), "client %d not closed", i);
    }
    /* Another server in the same process never repeats them either. */
    struct srv *w = server_up(NULL, ECHO);
    sm_conn *other = client_to(w->addr);
    ids[ID_CLIENTS + 1] = ask_id(other);
    sm_close(other);
    server_down(w);

    qsort(ids, ID_CLIENTS + 2, sizeof ids[0], cmp_id);
    cr_assert_neq(ids[0], 0);
    for (int i = 1; i < ID_CLIENTS + 2; i++)
        cr_assert_neq(ids[i], ids[i - 1], "id %" PRIu64 " given twice", ids[i]);
    /* The server's own log agrees. */
    cr_assert_eq(srv_count(v, 0), ID_CLIENTS + 1);
    sm_close(keep);
    server_down(v);
}

Test(server, send_to_a_closed_id_fails_and_reaches_no_newer_client, .timeout = 10)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *b = client_to(v->addr);
    ask_id(b);
    sm_conn *a = client_to(v->addr);
    sm_conn_id ida = ask_id(a);
    sm_close(a);
    struct close_ev ev = { 0 };
    cr_assert(wait_closed(v, ida, WAIT_MS, &ev));
    cr_assert_eq(ev.reason, SM_ECLOSED);
    /* Likely gets a's descriptor on the server side. */
    sm_conn *c = client_to(v->addr);
    sm_conn_id idc = ask_id(c);
    cr_assert_neq(idc, ida);

    sendto_via(b, ida, "for a", SM_ENOCONN);
    sendto_via(b, 0, "for nobody", SM_ENOCONN);
    sendto_via(b, ida + ((sm_conn_id)1 << 40), "for nobody", SM_ENOCONN);
    expect_silence(c, 200);
    sendto_via(b, idc, "for c", 0);
    expect_text(c, "for c");
    sm_close(b);
    sm_close(c);
    server_down(v);
}

Test(server, user_data_peer_ids_and_stats, .timeout = 10)
{
    struct srv *v = server_up(NULL, ECHO | TRACK);
    sm_conn *a = client_to(v->addr), *b = client_to(v->addr), *c = client_to(v->addr);
    sm_conn_id ida = ask_id(a), idb = ask_id(b), idc = ask_id(c);
    char buf[512], want[512], local[64];

    /* Activity order: a, b, c; a pings: b, c, a; then c asks: b, a, c. */
    ping(a);
    ask(c, "#ids 8", buf, sizeof buf);
    snprintf(want, sizeof want, "n=3 %" PRIu64 " %" PRIu64 " %" PRIu64, idb, ida, idc);
    cr_assert_str_eq(buf, want, "sm_server_ids, least recently active first");
    ask(c, "#ids 1", buf, sizeof buf);
    snprintf(want, sizeof want, "n=3 %" PRIu64, idb);
    cr_assert_str_eq(buf, want, "sm_server_ids with cap 1 still counts all");
    ask(c, "#ids 0", buf, sizeof buf);
    cr_assert_str_eq(buf, "n=3");

    /* The per-connection data counted a's messages: whoami, #ping, #info. */
    local_addr_of(a, local, sizeof local);
    snprintf(want, sizeof want, "peer=%s msgs=3", local);
    ask(a, "#info", buf, sizeof buf);
    cr_assert_str_eq(buf, want);
    snprintf(want, sizeof want, "peer=%s n=%zu short=%d null=%d", local, strlen(local), SM_EINVAL,
             SM_EINVAL);
    ask(a, "#peer", buf, sizeof buf);
    cr_assert_str_eq(buf, want);

    struct stats_reply st = ask_stats(a);
    cr_assert_eq(st.conns, 3);
    cr_assert_eq(st.accepted, 3);
    cr_assert_eq(st.rejected, 0);
    cr_assert_eq(st.pauses, 0);
    sm_close(b);
    struct close_ev ev = { 0 };
    cr_assert(wait_closed(v, idb, WAIT_MS, &ev));
    cr_assert_eq(ev.reason, SM_ECLOSED);
    st = ask_stats(a);
    cr_assert_eq(st.conns, 2);
    cr_assert_eq(st.accepted, 3);
    ask(a, "#ids 8", buf, sizeof buf);
    snprintf(want, sizeof want, "n=2 %" PRIu64 " %" PRIu64, idc, ida);
    cr_assert_str_eq(buf, want);

    /* Not running now, so this thread may call the rest of the API. */
    server_halt(v);
    cr_assert(srv_closed(v, ida, &ev) && ev.reason == SM_ESTOPPED);
    cr_assert(srv_closed(v, idc, &ev) && ev.reason == SM_ESTOPPED);
    cr_assert_null(sm_server_data(v->s, ida));
    cr_assert_eq(sm_server_set_data(v->s, ida, v), SM_ENOCONN);
    cr_assert_eq(sm_server_peer(v->s, ida, buf, sizeof buf), SM_ENOCONN);
    cr_assert_eq(sm_server_send(v->s, ida, "x", 1), SM_ENOCONN);
    cr_assert_eq(sm_server_disconnect(v->s, ida), SM_ENOCONN);
    cr_assert_eq(sm_server_ids(v->s, NULL, 0), 0);
    cr_assert_eq(sm_server_broadcast(v->s, "x", 1, 0), 0);
    sm_server_stats ss;
    sm_server_get_stats(v->s, &ss);
    cr_assert_eq(ss.conns, 0);
    cr_assert_eq(ss.accepted, 3);
    expect_eof(a);
    expect_eof(c);
    sm_close(a);
    sm_close(c);
    srv_destroy(v);
}

/* ------------------------------------------------------------------ */
/* Disconnect                                                          */
/* ------------------------------------------------------------------ */

Test(server, disconnect_after_send_delivers_the_reply_then_eof, .timeout = 10)
{
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *other = client_to(v->addr);
    ask_id(other);
    sm_conn *c = client_to(v->addr);
    sm_conn_id id = ask_id(c);
    send_text(c, "#bye goodbye");
    expect_text(c, "goodbye");
    expect_eof(c);
    struct close_ev ev = { 0 };
    cr_assert(wait_closed(v, id, WAIT_MS, &ev));
    cr_assert_eq(ev.reason, 0, "reason %s", sm_strerror(ev.reason));
    pthread_mutex_lock(&v->lock);
    int rc = v->disconnect_rc, calls = v->disconnects;
    pthread_mutex_unlock(&v->lock);
    cr_assert_eq(calls, 1);
    cr_assert_eq(rc, 0, "sm_server_disconnect: %s", sm_strerror(rc));
    ping(other);
    sm_close(c);
    sm_close(other);
    server_down(v);
}

Test(server, disconnect_drains_a_large_queue_first, .timeout = 15)
{
    enum { COUNT = 64, SIZE = 65536 };
    struct srv *v = server_up(NULL, ECHO);
    sm_conn *c = client_to(v->addr);
    sm_conn_id id = ask_id(c);
    char req[64];
    snprintf(req, sizeof req, "#bigbye %d %d", COUNT, SIZE);
    send_text(c, req);
    sleep_ms(200); /* 4 MiB is more than the socket takes: most stays queued */
    cr_assert_not(srv_closed(v, id, NULL), "closed before the queue drained");
    uint8_t *got = malloc(SIZE), *want = malloc(SIZE);
    cr_assert(got && want);
    for (int i = 0; i < COUNT; i++) {
        ssize_t n = sm_recv(c, got, SIZE);
        cr_assert_eq(n, SIZE, "message %d: %zd (%s)", i, n, n < 0 ? sm_strerror((int)n) : "");
        memset(want, (i * 3 + 1) & 0xff, SIZE);
        cr_assert(memcmp(got, want, SIZE) == 0, "message %d", i);
    }
    expect_eof(c);
    struct close_ev ev = { 0 };
    cr_assert(wait_closed(v, id, WAIT_MS, &ev));
    cr_assert_eq(ev.reason, 0);
    free(got);
    free(want);
    sm_close(c);
    server_down(v);
}

/* ------------------------------------------------------------------ */
/* Stop and run again                                                  */
/* ------------------------------------------------------------------ */

Test(server, stop_before_run_returns_at_once_and_run_serves_again, .timeout = 10)
{
    struct srv *v = server_new_only(NULL, ECHO);
    sm_server_stop(v->s);
    int64_t t0 = now_ms();
    server_start(v);
    int rc = srv_join(v, 1000);
    cr_assert_neq(rc, 1, "a stop before run did not make run return");
    cr_assert_eq(rc, 0);
    cr_assert_lt(now_ms() - t0, 1000);

    /* The stop was used up: the next run serves until the next stop. */
    for (int round = 0; round < 2; round++) {
        server_start(v);
        sm_conn *c = client_to(v->addr);
        sm_conn_id id = ask_id(c);
        send_text(c, "echo me");
        expect_text(c, "echo me");
        cr_assert_not(atomic_load(&v->done), "run returned without a stop");
        server_halt(v);
        struct close_ev ev = { 0 };
        cr_assert(srv_closed(v, id, &ev), "run returned before on_close");
        cr_assert_eq(ev.reason, SM_ESTOPPED);
        expect_eof(c);
        sm_close(c);
    }
    cr_assert_eq(srv_count(v, 0), 2);
    cr_assert_eq(srv_count(v, 1), 2);
    srv_destroy(v);
}
