/*
 * TLS with OpenSSL: round trips, verification on by default, mutual TLS,
 * handshake timeouts, plain and TLS peers on the wrong port, and a TLS
 * server that hostile peers cannot slow down.  The certificates are made
 * fresh for every test by tests/tls/make-certs.sh.  Built without OpenSSL
 * (make TLS=0), every test checks the clear SM_ENOTLS instead.
 */
#include "support/support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char certs[128];

/* A file of the test's certificates, in a static buffer of its own. */
static const char *cert(const char *name)
{
    static char paths[8][200];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", certs, name);
    return p;
}

static void make_certs(void)
{
    snprintf(certs, sizeof certs, "/tmp/sm-tls-%ld", (long)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "sh tests/tls/make-certs.sh %s", certs);
    cr_assert_eq(system(cmd), 0, "making certificates with openssl failed");
}

static void remove_certs(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", certs);
    if (system(cmd) != 0)
        cr_log_warn("could not remove %s", certs);
}

#define TLS_TEST(name) Test(tls, name, .init = make_certs, .fini = remove_certs, .timeout = 60)

static sm_tls_options server_tls(void)
{
    return (sm_tls_options){ .cert_file = cert("server.pem"), .key_file = cert("server.key") };
}

/* ---- a blocking echo server on its own thread ---- */

struct echo {
    sm_listener *l;
    pthread_t thread;
    char addr[SM_ADDRSTRLEN];
    int accept_rc;
    char peer_cert[256];
};

static void *echo_one(void *arg)
{
    struct echo *e = arg;
    sm_conn *c;
    e->accept_rc = sm_accept(e->l, &c);
    if (e->accept_rc)
        return NULL;
    if (sm_conn_peer_cert(c, e->peer_cert, sizeof e->peer_cert) < 0)
        e->peer_cert[0] = '\0';
    void *msg;
    ssize_t n;
    while ((n = sm_recv_alloc(c, &msg)) >= 0) {
        int rc = sm_send(c, msg, (size_t)n);
        free(msg);
        if (rc)
            break;
    }
    sm_close(c);
    return NULL;
}

/* Starts an echo server for one client, with tls on "127.0.0.1:0". */
static void echo_start(struct echo *e, const sm_tls_options *tls, uint32_t max_frame)
{
    memset(e, 0, sizeof *e);
    sm_options o = { .tls = tls, .accept_timeout_ms = 10000, .max_frame = max_frame };
    int rc = sm_listen_opts(&e->l, "127.0.0.1:0", &o);
    cr_assert_eq(rc, 0, "TLS listen: %s", sm_last_error());
    cr_assert_gt(sm_listener_addr(e->l, e->addr, sizeof e->addr), 0);
    cr_assert_eq(pthread_create(&e->thread, NULL, echo_one, e), 0);
}

static void echo_stop(struct echo *e)
{
    pthread_join(e->thread, NULL);
    sm_listener_close(e->l);
}

/* "localhost:PORT" for an echo server's "127.0.0.1:PORT". */
static void as_localhost(const struct echo *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "localhost%s", strrchr(e->addr, ':'));
}

static void round_trip(sm_conn *c, size_t len)
{
    uint8_t *m = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        m[i] = (uint8_t)(i * 7 + len);
    cr_assert_eq(sm_send(c, m, len), 0, "send %zu: %s", len, sm_last_error());
    void *back;
    ssize_t n = sm_recv_alloc(c, &back);
    cr_assert_eq(n, (ssize_t)len, "echo of %zu: %zd %s", len, n, sm_last_error());
    cr_assert_arr_eq(back, m, len);
    free(back);
    free(m);
}

/* Connects to e with tls; returns the code and closes what connected. */
static int try_connect(const char *addr, const sm_tls_options *tls)
{
    sm_options o = { .tls = tls, .connect_timeout_ms = 5000, .recv_timeout_ms = 5000 };
    sm_conn *c = NULL;
    int rc = sm_connect_opts(&c, addr, &o);
    if (!rc) {
        /* With TLS 1.3 a refused client certificate shows on the first read. */
        rc = sm_send(c, "x", 1);
        char b;
        if (!rc)
            rc = sm_recv(c, &b, 1) == 1 ? 0 : (int)sm_recv(c, &b, 1);
    }
    sm_close(c);
    return rc;
}

/* ---- tests ---- */

TLS_TEST(round_trips_of_every_size)
{
    sm_tls_options st = server_tls();
    if (!sm_tls_available()) {
        sm_listener *l;
        sm_options o = { .tls = &st };
        cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), SM_ENOTLS);
        cr_assert(strstr(sm_last_error(), "without OpenSSL"), "%s", sm_last_error());
        return;
    }
    enum { MAX = 4 << 20 };
    struct echo e;
    echo_start(&e, &st, MAX);
    sm_tls_options ct = { .ca_file = cert("ca.pem") };
    sm_options o = {
        .tls = &ct, .connect_timeout_ms = 5000, .recv_timeout_ms = 10000, .max_frame = MAX
    };
    char addr[64];
    as_localhost(&e, addr, sizeof addr);
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0, "%s", sm_last_error());
    const size_t sizes[] = { 0, 1, 64 * 1024, 1 << 20, MAX };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        round_trip(c, sizes[i]);
    sm_close(c);
    echo_stop(&e);
    cr_expect_eq(e.accept_rc, 0);
}

TLS_TEST(verification_is_on_and_names_the_reason)
{
    if (!sm_tls_available())
        return;
    struct {
        const char *server, *key, *ca, *why;
    } cases[] = {
        { "server.pem", "server.key", "other-ca.pem", "wrong CA" },
        { "wronghost.pem", "wronghost.key", "ca.pem", "wrong host name" },
        { "expired.pem", "expired.key", "ca.pem", "expired" },
        { "self.pem", "self.key", "ca.pem", "self-signed" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sm_tls_options st = { .cert_file = cert(cases[i].server), .key_file = cert(cases[i].key) };
        struct echo e;
        echo_start(&e, &st, 0);
        sm_tls_options ct = { .ca_file = cert(cases[i].ca) };
        int rc = try_connect(e.addr, &ct);
        cr_expect_eq(rc, SM_EVERIFY, "%s: %d %s", cases[i].why, rc, sm_last_error());
        cr_expect(strstr(sm_last_error(), "certificate verify failed"), "%s: %s", cases[i].why,
                  sm_last_error());
        echo_stop(&e);
    }
}

TLS_TEST(skipping_verification_happens_only_when_asked)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = { .cert_file = cert("self.pem"), .key_file = cert("self.key") };
    struct echo e;
    echo_start(&e, &st, 0);
    sm_tls_options verify = { 0 }; /* the system store: it does not know our self-signed */
    cr_expect_eq(try_connect(e.addr, &verify), SM_EVERIFY, "%s", sm_last_error());
    echo_stop(&e);
    echo_start(&e, &st, 0);
    sm_tls_options skip = { .insecure_skip_verify = 1 };
    cr_expect_eq(try_connect(e.addr, &skip), 0, "%s", sm_last_error());
    echo_stop(&e);
}

/* Writes src's bytes over dst, in place (the same inode), and dates it
 * age_s seconds back: settled, so a context made from it may be kept. */
static void overwrite(const char *dst, const char *src, int age_s)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "r+b");
    if (!out)
        out = fopen(dst, "wb");
    cr_assert(in && out, "%s or %s: %s", src, dst, strerror(errno));
    char buf[4096];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        cr_assert_eq(fwrite(buf, 1, n, out), n);
        total += n;
    }
    fclose(in);
    cr_assert_eq(fflush(out), 0);
    cr_assert_eq(ftruncate(fileno(out), (off_t)total), 0);
    fclose(out);
    struct timespec when[2];
    clock_gettime(CLOCK_REALTIME, &when[0]);
    when[0].tv_sec -= age_s;
    when[1] = when[0];
    cr_assert_eq(utimensat(AT_FDCWD, dst, when, 0), 0, "%s", strerror(errno));
}

/* A client reuses its last TLS context while the options and their files
 * stay the same; a file changed on disk is read again, never served from
 * the old context. */
TLS_TEST(a_changed_ca_file_is_read_again)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = server_tls();
    char trust[200];
    snprintf(trust, sizeof trust, "%s/trust.pem", certs);
    sm_tls_options ct = { .ca_file = trust };
    struct {
        const char *ca; /* what trust.pem holds */
        int age_s, want;
    } steps[] = {
        { "ca.pem", 60, 0 },                /* made and kept */
        { NULL, 0, 0 },                     /* unchanged: the kept one serves */
        { "other-ca.pem", 30, SM_EVERIFY }, /* changed: read again */
        { "ca.pem", 20, 0 },                /* and back */
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        if (steps[i].ca)
            overwrite(trust, cert(steps[i].ca), steps[i].age_s);
        struct echo e;
        echo_start(&e, &st, 0);
        int rc = try_connect(e.addr, &ct);
        echo_stop(&e);
        cr_assert_eq(rc, steps[i].want, "step %zu (trust.pem is %s): %d %s", i,
                     steps[i].ca ? steps[i].ca : "unchanged", rc, sm_last_error());
    }
    /* The files are read before connecting: nobody need listen. */
    cr_assert_eq(unlink(trust), 0);
    char nowhere[SM_ADDRSTRLEN];
    closed_addr("127.0.0.1:0", nowhere);
    int rc = try_connect(nowhere, &ct);
    cr_assert_eq(rc, SM_ETLS, "trust.pem removed: %d %s", rc, sm_last_error());
    cr_assert(strstr(sm_last_error(), "trust.pem"), "the error names the file: %s",
              sm_last_error());
}

/* The same with no CAs named: the system store, here moved by
 * SSL_CERT_FILE as OpenSSL allows, is what the kept context depends on. */
TLS_TEST(a_changed_system_store_is_read_again)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = server_tls();
    char store[200];
    snprintf(store, sizeof store, "%s/store.pem", certs);
    cr_assert_eq(setenv("SSL_CERT_FILE", store, 1), 0);
    char none[200];
    snprintf(none, sizeof none, "%s/no-such-dir", certs);
    cr_assert_eq(setenv("SSL_CERT_DIR", none, 1), 0); /* the store is the file alone */
    sm_tls_options system = { 0 };
    const struct {
        const char *ca;
        int age_s, want;
    } steps[] = { { "ca.pem", 60, 0 }, { "other-ca.pem", 30, SM_EVERIFY }, { "ca.pem", 20, 0 } };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        overwrite(store, cert(steps[i].ca), steps[i].age_s);
        struct echo e;
        echo_start(&e, &st, 0);
        int rc = try_connect(e.addr, &system);
        echo_stop(&e);
        cr_assert_eq(rc, steps[i].want, "step %zu (the store is %s): %d %s", i, steps[i].ca, rc,
                     sm_last_error());
    }
}

TLS_TEST(mutual_tls_accepts_a_known_client_and_refuses_others)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = server_tls();
    st.ca_file = cert("ca.pem");
    st.require_client_cert = 1;
    struct echo e;
    echo_start(&e, &st, 0);
    sm_tls_options with = { .ca_file = cert("ca.pem"),
                            .cert_file = cert("client.pem"),
                            .key_file = cert("client.key") };
    cr_expect_eq(try_connect(e.addr, &with), 0, "%s", sm_last_error());
    echo_stop(&e);
    cr_expect(strstr(e.peer_cert, "CN=robot-3"), "the server sees who it is: '%s'", e.peer_cert);
    echo_start(&e, &st, 0);
    sm_tls_options without = { .ca_file = cert("ca.pem") };
    int rc = try_connect(e.addr, &without);
    cr_expect(rc == SM_ETLS || rc == SM_ECLOSED || rc == -ECONNRESET,
              "no client certificate: refused (%d %s)", rc, sm_last_error());
    echo_stop(&e);
    cr_expect(e.accept_rc == SM_ETLS || e.accept_rc == SM_EVERIFY, "the server refused: %d",
              e.accept_rc);
}

TLS_TEST(a_handshake_never_started_times_out)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = server_tls();
    sm_options o = { .tls = &st, .accept_timeout_ms = 300 };
    sm_listener *l;
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), 0);
    char addr[SM_ADDRSTRLEN];
    sm_listener_addr(l, addr, sizeof addr);
    sm_conn *plain; /* connects, then says nothing */
    cr_assert_eq(sm_connect(&plain, addr), 0);
    sm_conn *c = NULL;
    int64_t start = now_ms();
    cr_expect_eq(sm_accept(l, &c), SM_ETIMEDOUT, "%s", sm_last_error());
    cr_expect_lt(now_ms() - start, 2000);
    sm_close(plain);
    sm_listener_close(l);
}

TLS_TEST(plain_and_tls_on_the_wrong_port_fail_cleanly)
{
    if (!sm_tls_available())
        return;
    /* A TLS client on a plain port. */
    struct echo e;
    echo_start(&e, NULL, 0);
    sm_tls_options ct = { .ca_file = cert("ca.pem") };
    int rc = try_connect(e.addr, &ct);
    cr_expect(rc == SM_ETLS, "TLS client, plain server: %d %s", rc, sm_last_error());
    echo_stop(&e);
    /* A plain client on a TLS port. */
    sm_tls_options st = server_tls();
    echo_start(&e, &st, 0);
    rc = try_connect(e.addr, NULL);
    cr_expect(rc == SM_ECLOSED || rc == -ECONNRESET || rc == SM_ETOOBIG,
              "plain client, TLS server: %d %s", rc, sm_last_error());
    echo_stop(&e);
    cr_expect_eq(e.accept_rc, SM_ETLS, "the server saw no TLS: %s", sm_strerror(e.accept_rc));
}

/* ---- the event server over TLS ---- */

/* Echoes, but answers "who" with the client certificate's subject. */
static void echo_or_tell_subject(sm_server *s, sm_conn_id id, const void *msg, size_t len,
                                 void *arg)
{
    (void)arg;
    char subject[256];
    if (len == 3 && memcmp(msg, "who", 3) == 0 &&
        sm_server_peer_cert(s, id, subject, sizeof subject) > 0)
        sm_server_send(s, id, subject, strlen(subject));
    else
        sm_server_send(s, id, msg, len);
}

static void *serve(void *arg)
{
    sm_server_run(arg);
    return NULL;
}

/* Echo time for a fresh TLS client, handshake included. */
static int64_t fresh_tls_echo(const char *addr)
{
    sm_tls_options ct = { .ca_file = cert("ca.pem") };
    sm_options o = { .tls = &ct, .connect_timeout_ms = 5000, .recv_timeout_ms = 5000 };
    int64_t start = now_ms();
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0, "%s", sm_last_error());
    round_trip(c, 100);
    sm_close(c);
    return now_ms() - start;
}

TLS_TEST(server_offers_plain_and_tls_ports_and_shrugs_off_hostile_peers)
{
    if (!sm_tls_available()) {
        sm_server *s;
        cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
        sm_tls_options st = server_tls();
        cr_expect_eq(sm_server_listen_tls(s, "127.0.0.1:0", &st), SM_ENOTLS);
        sm_server_free(s);
        return;
    }
    sm_server_handlers h = { .on_message = echo_or_tell_subject };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, NULL, NULL), 0);
    sm_tls_options st = server_tls();
    st.ca_file = cert("ca.pem");
    st.handshake_timeout_ms = 500;
    cr_assert_eq(sm_server_listen(s, "127.0.0.1:0"), 0);
    cr_assert_eq(sm_server_listen_tls(s, "127.0.0.1:0", &st), 1, "%s", sm_last_error());
    char plain[SM_ADDRSTRLEN], tls[SM_ADDRSTRLEN];
    sm_server_addr(s, 0, plain, sizeof plain);
    sm_server_addr(s, 1, tls, sizeof tls);
    pthread_t t;
    pthread_create(&t, NULL, serve, s);
    /* Hostile peers on the TLS port: one says nothing, one sends garbage,
     * one dribbles the start of a hello, one speaks plain frames. */
    sm_conn *silent, *garbage, *dribble, *framed;
    cr_assert_eq(sm_connect(&silent, tls), 0);
    cr_assert_eq(sm_connect(&garbage, tls), 0);
    cr_assert_eq(sm_connect(&dribble, tls), 0);
    cr_assert_eq(sm_connect(&framed, tls), 0);
    static const uint8_t junk[64] = { 0xde, 0xad, 0xbe, 0xef };
    cr_assert_eq(send(sm_conn_fd(garbage), junk, sizeof junk, MSG_NOSIGNAL), (ssize_t)sizeof junk);
    static const uint8_t hello_start[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01 };
    cr_assert_eq(send(sm_conn_fd(dribble), hello_start, 1, MSG_NOSIGNAL), 1);
    cr_assert_eq(sm_send(framed, "plain", 5), 0);
    /* A fresh client is served in under 50 ms; the median of five keeps one scheduler
     * hiccup on a loaded machine from failing it, and the worst still has
     * to beat the 500 ms a stuck handshake would cost everyone. */
    int64_t took[5];
    for (int i = 0; i < 5; i++) {
        took[i] = fresh_tls_echo(tls);
        for (int j = i; j > 0 && took[j] < took[j - 1]; j--) {
            int64_t swap = took[j];
            took[j] = took[j - 1];
            took[j - 1] = swap;
        }
    }
    cr_expect_lt(took[2], 50, "a fresh TLS client took %lld ms (median) among hostile peers",
                 (long long)took[2]);
    cr_expect_lt(took[4], 500, "a fresh TLS client took %lld ms (worst) among hostile peers",
                 (long long)took[4]);
    /* The plain port still serves plain clients. */
    sm_conn *c;
    sm_options po = { .recv_timeout_ms = 5000 };
    cr_assert_eq(sm_connect_opts(&c, plain, &po), 0);
    round_trip(c, 10);
    sm_close(c);
    /* Mutual TLS is optional on this port; the subject is there when given. */
    sm_tls_options mt = { .ca_file = cert("ca.pem"),
                          .cert_file = cert("client.pem"),
                          .key_file = cert("client.key") };
    sm_options mo = { .tls = &mt, .recv_timeout_ms = 5000 };
    cr_assert_eq(sm_connect_opts(&c, tls, &mo), 0, "%s", sm_last_error());
    cr_assert_eq(sm_send(c, "who", 3), 0);
    char subject[256] = "";
    ssize_t n = sm_recv(c, subject, sizeof subject - 1);
    cr_assert_gt(n, 0);
    subject[n] = '\0';
    cr_expect(strstr(subject, "CN=robot-3"), "handlers see the client's subject: '%s'", subject);
    sm_close(c);
    /* The silent and dribbling peers are closed after the handshake timeout. */
    char b;
    sm_options wait = { .recv_timeout_ms = 3000 };
    sm_conn_set_options(silent, &wait);
    sm_conn_set_options(dribble, &wait);
    int64_t start = now_ms();
    int rc = (int)sm_recv(silent, &b, 1);
    cr_expect(rc == SM_ECLOSED || rc == -ECONNRESET, "the silent peer was closed: %d", rc);
    cr_expect_lt(now_ms() - start, 2500);
    rc = (int)sm_recv(dribble, &b, 1);
    cr_expect(rc == SM_ECLOSED || rc == -ECONNRESET || rc == SM_ETRUNCATED,
              "the dribbling peer was closed: %d", rc);
    sm_server_stats stats;
    sm_server_stop(s);
    pthread_join(t, NULL);
    sm_server_get_stats(s, &stats);
    cr_expect_geq(stats.tls_failed, 4, "%llu handshakes failed",
                  (unsigned long long)stats.tls_failed);
    sm_close(silent);
    sm_close(garbage);
    sm_close(dribble);
    sm_close(framed);
    sm_server_free(s);
}

enum { SHARING_THREADS = 4, CONNECTS_EACH = 10 };

struct sharer {
    const char *addr, *ca;
    int ok; /* connects that echoed */
};

/* Connects CONNECTS_EACH times, one echo each (non-asserting: a thread). */
static void *connect_repeatedly(void *arg)
{
    struct sharer *sh = arg;
    sm_tls_options ct = { .ca_file = sh->ca };
    sm_options o = { .tls = &ct, .connect_timeout_ms = 5000, .recv_timeout_ms = 5000 };
    for (int i = 0; i < CONNECTS_EACH; i++) {
        sm_conn *c;
        if (sm_connect_opts(&c, sh->addr, &o) != 0)
            continue;
        char back[4];
        if (sm_send(c, "ping", 4) == 0 && sm_recv(c, back, sizeof back) == 4)
            sh->ok++;
        sm_close(c);
    }
    return NULL;
}

/* The kept client context is shared by connects on several threads at
 * once (under ASan and TSan too). */
Test(threads, tls_clients_share_the_kept_client_context, .init = make_certs, .fini = remove_certs,
     .timeout = 60)
{
    if (!sm_tls_available())
        return;
    char trust[200];
    snprintf(trust, sizeof trust, "%s/trust.pem", certs);
    overwrite(trust, cert("ca.pem"), 60); /* settled: the context is kept */
    sm_server_handlers h = { .on_message = echo_message };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, NULL, NULL), 0);
    sm_tls_options st = server_tls();
    cr_assert_eq(sm_server_listen_tls(s, "127.0.0.1:0", &st), 0, "%s", sm_last_error());
    char addr[SM_ADDRSTRLEN];
    sm_server_addr(s, 0, addr, sizeof addr);
    pthread_t server, t[SHARING_THREADS];
    pthread_create(&server, NULL, serve, s);
    struct sharer sh[SHARING_THREADS];
    for (int i = 0; i < SHARING_THREADS; i++) {
        sh[i] = (struct sharer){ addr, trust, 0 };
        cr_assert_eq(pthread_create(&t[i], NULL, connect_repeatedly, &sh[i]), 0);
    }
    for (int i = 0; i < SHARING_THREADS; i++)
        pthread_join(t[i], NULL);
    sm_server_stop(s);
    pthread_join(server, NULL);
    sm_server_free(s);
    for (int i = 0; i < SHARING_THREADS; i++)
        cr_expect_eq(sh[i].ok, CONNECTS_EACH, "thread %d: %d of %d connects echoed", i, sh[i].ok,
                     CONNECTS_EACH);
}

/* ---- helpers for the promise tests ---- */

struct dialer {
    const char *addr;
    int stay;   /* stays connected, as c; else leaves at once */
    sm_conn *c; /* with stay: the client, or NULL if it failed */
};

/* Connects over TLS, then stays or leaves at once. */
static void *dial(void *arg)
{
    struct dialer *d = arg;
    sm_tls_options ct = { .ca_file = cert("ca.pem") };
    sm_options o = { .tls = &ct, .connect_timeout_ms = 5000 };
    if (sm_connect_opts(&d->c, d->addr, &o) != 0)
        d->c = NULL;
    else if (!d->stay)
        sm_close(d->c);
    return NULL;
}

/* A TLS listener on *l and the client d dialled to it (on a thread of its
 * own, since the handshake needs both ends): returns the accepted end. */
static sm_conn *accept_dialled(sm_listener **l, struct dialer *d)
{
    sm_tls_options st = server_tls();
    sm_options so = { .tls = &st, .accept_timeout_ms = 5000 };
    cr_assert_eq(sm_listen_opts(l, "127.0.0.1:0", &so), 0);
    static char addr[SM_ADDRSTRLEN];
    sm_listener_addr(*l, addr, sizeof addr);
    d->addr = addr;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, dial, d), 0);
    sm_conn *c;
    cr_assert_eq(sm_accept(*l, &c), 0, "%s", sm_last_error());
    pthread_join(t, NULL);
    return c;
}

struct counter {
    sm_listener *l;
    int got, end;
};

/* Accepts one client and counts its messages until the stream ends. */
static void *count_messages(void *arg)
{
    struct counter *n = arg;
    sm_conn *c;
    if ((n->end = sm_accept(n->l, &c)) != 0)
        return NULL;
    char buf[64];
    ssize_t r;
    while ((r = sm_recv(c, buf, sizeof buf)) >= 0)
        n->got++;
    n->end = (int)r;
    sm_close(c);
    return NULL;
}

enum { SENT_LEN = 200000, SENDS = 60 };

struct sender {
    const char *addr, *ca;
    int sent, timeouts;
    atomic_int done_sending; /* the reader may start */
};

/* Sends messages of one repeated byte each to a peer that reads nothing
 * yet; a message that times out is dropped and the next one sent. */
static void *send_with_timeouts(void *arg)
{
    struct sender *sd = arg;
    sm_tls_options ct = { .ca_file = sd->ca };
    sm_options o = { .tls = &ct, .connect_timeout_ms = 5000, .send_timeout_ms = 10 };
    sm_conn *c;
    if (sm_connect_opts(&c, sd->addr, &o) != 0)
        return NULL;
    uint8_t *m = malloc(SENT_LEN);
    for (int i = 0; i < SENDS; i++) {
        memset(m, i + 1, SENT_LEN);
        int rc = sm_send(c, m, SENT_LEN);
        if (rc == 0)
            sd->sent++;
        else if (rc == SM_ETIMEDOUT)
            sd->timeouts++;
    }
    atomic_store(&sd->done_sending, 1);
    sm_options patient = { .send_timeout_ms = 20000 };
    sm_conn_set_options(c, &patient);
    sm_flush(c);
    sm_close(c);
    free(m);
    return NULL;
}

/* ---- the library's promises, over TLS too ---- */

TLS_TEST(a_vanished_peer_never_raises_sigpipe)
{
    if (!sm_tls_available())
        return;
    /* If the library raised SIGPIPE, this process would die. */
    signal(SIGPIPE, SIG_DFL);
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_UNBLOCK, &pipe_only, NULL);
    sm_listener *l;
    struct dialer d = { .stay = 0 };
    sm_conn *c = accept_dialled(&l, &d);
    static uint8_t big[256 * 1024];
    int rc = 0;
    for (int i = 0; i < 50 && rc == 0; i++)
        rc = sm_send(c, big, sizeof big);
    cr_expect(rc == -EPIPE || rc == -ECONNRESET || rc == SM_ETLS, "the send failed: %d %s", rc,
              sm_last_error());
    sm_close(c);
    sm_listener_close(l);
}

TLS_TEST(held_frames_never_block_a_receive)
{
    if (!sm_tls_available())
        return;
    sm_listener *l;
    struct dialer d = { .stay = 1 };
    sm_conn *peer = accept_dialled(&l, &d);
    cr_assert_not_null(d.c, "the TLS client connected");
    held_frames_never_block_receiving(d.c, peer);
    close_pair(l, peer, d.c);
}

TLS_TEST(a_client_that_only_sends_loses_nothing_when_it_closes)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = server_tls();
    struct counter n = { 0 };
    sm_options so = { .tls = &st, .accept_timeout_ms = 5000, .recv_timeout_ms = 5000 };
    cr_assert_eq(sm_listen_opts(&n.l, "127.0.0.1:0", &so), 0);
    char addr[SM_ADDRSTRLEN];
    sm_listener_addr(n.l, addr, sizeof addr);
    pthread_t t;
    pthread_create(&t, NULL, count_messages, &n);
    sm_tls_options ct = { .ca_file = cert("ca.pem") };
    sm_options co = { .tls = &ct, .connect_timeout_ms = 5000 };
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, addr, &co), 0, "%s", sm_last_error());
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(sm_send_flags(c, "0123456789abcdef", 16, i % 64 == 63 ? 0 : SM_MORE), 0);
    sm_close(c);
    pthread_join(t, NULL);
    cr_expect_eq(n.got, 2000, "the server read %d of 2000, then %s", n.got, sm_strerror(n.end));
    cr_expect_eq(n.end, SM_ECLOSED, "a clean close: %s", sm_strerror(n.end));
    sm_listener_close(n.l);
}

TLS_TEST(a_send_timeout_never_cuts_the_stream)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = server_tls();
    sm_options so = { .tls = &st, .accept_timeout_ms = 5000, .recv_timeout_ms = 10000 };
    sm_listener *l;
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &so), 0);
    char addr[SM_ADDRSTRLEN];
    sm_listener_addr(l, addr, sizeof addr);
    struct sender sd = { .addr = addr, .ca = cert("ca.pem") };
    pthread_t t;
    pthread_create(&t, NULL, send_with_timeouts, &sd);
    sm_conn *c;
    cr_assert_eq(sm_accept(l, &c), 0, "%s", sm_last_error());
    /* Read slowly, so the sender's sends time out, then go through, then
     * time out again; it drops each message that timed out and sends the
     * next instead. */
    void *msg;
    ssize_t n;
    int frames = 0;
    while ((n = sm_recv_alloc(c, &msg)) >= 0) {
        cr_assert_eq(n, SENT_LEN, "frame %d whole", frames);
        cr_assert(((uint8_t *)msg)[0] == ((uint8_t *)msg)[SENT_LEN - 1], "frame %d one message",
                  frames);
        free(msg);
        frames++;
        if (!atomic_load(&sd.done_sending))
            usleep(15000);
    }
    pthread_join(t, NULL);
    cr_assert_gt(sd.timeouts, 0, "the sends timed out");
    cr_expect_eq(n, SM_ECLOSED, "the stream parsed to its end: %s", sm_strerror((int)n));
    cr_expect_eq(frames, sd.sent, "every send that returned 0 arrived, no other");
    sm_close(c);
    sm_listener_close(l);
}

TLS_TEST(connect_retry_does_not_retry_a_certificate_that_fails)
{
    if (!sm_tls_available())
        return;
    sm_tls_options st = server_tls();
    struct echo e;
    echo_start(&e, &st, 0);
    sm_tls_options ct = { .ca_file = cert("other-ca.pem") };
    sm_options o = { .tls = &ct };
    sm_conn *c = NULL;
    int64_t start = now_ms();
    cr_expect_eq(sm_connect_retry(&c, e.addr, &o, 0), SM_EVERIFY, "%s", sm_last_error());
    cr_expect_lt(now_ms() - start, 3000, "given up at once");
    echo_stop(&e);
}

static void count_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)s;
    (void)id;
    (void)reason;
    atomic_fetch_add((atomic_int *)arg, 1);
}

TLS_TEST(a_client_in_its_handshake_is_not_closed_as_idle)
{
    if (!sm_tls_available())
        return;
    atomic_int closes = 0;
    sm_server_handlers h = { .on_close = count_close };
    sm_server_options so = { .idle_timeout_ms = 100 };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, &so, &closes), 0);
    sm_tls_options st = server_tls();
    st.handshake_timeout_ms = 600;
    cr_assert_eq(sm_server_listen_tls(s, "127.0.0.1:0", &st), 0);
    char addr[SM_ADDRSTRLEN];
    sm_server_addr(s, 0, addr, sizeof addr);
    sm_conn *silent;
    cr_assert_eq(sm_connect(&silent, addr), 0);
    int64_t until = now_ms() + 2500;
    while (now_ms() < until)
        sm_server_run_once(s, 50);
    sm_server_stats stats;
    sm_server_get_stats(s, &stats);
    cr_expect_eq(atomic_load(&closes), 0, "no on_close for a client that never opened");
    cr_expect_eq(stats.tls_failed, 1, "its handshake timed out");
    cr_expect_eq(stats.conns, 0);
    sm_close(silent);
    sm_server_free(s);
}
