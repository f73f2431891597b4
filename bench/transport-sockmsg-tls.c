/* sockmsg-tls: libsockmsg over TLS, with the run's certificates
 * (tlssock.h).  lat and thr: the blocking API with sm_options.tls (the
 * client verifies the server against the run's CA and 127.0.0.1, the
 * default for an address); the server and hs workloads: sm_server with
 * sm_server_listen_tls.  The "more" variant is the fast path for streams,
 * as in sockmsg: SM_MORE on the sender, sm_recv_view on the receiver.
 * "hs ... raw": the client is raw-tls's (OpenSSL, one context for every
 * connection) against the same sm_server.
 *
 * The library's own OpenSSL calls are seen through the linker
 * (-Wl,--wrap=SSL_new,--wrap=SSL_CTX_ctrl in the Makefile): SSL_new to
 * report what a connection negotiated, SSL_CTX_ctrl to measure the
 * library without SSL_MODE_RELEASE_BUFFERS when BENCH_TLS_KEEP_BUFFERS=1
 * (the mode is cleared from its SSL_CTX_set_mode; lib/ is unchanged). */
#include "bench.h"
#include "tlssock.h"

#include <sockmsg/sockmsg.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char t_name[] = "sockmsg-tls";

/* ---- the library's OpenSSL calls, seen through the linker ---- */

static SSL *last_ssl;    /* the last session made in this process */
static int release_seen; /* SSL_MODE_RELEASE_BUFFERS passed on: 1, cleared: -1 */
static int keep_buffers; /* BENCH_TLS_KEEP_BUFFERS=1: clear it */
static int raw_client;   /* hs raw: raw-tls's client */

SSL *__real_SSL_new(SSL_CTX *ctx);
SSL *__wrap_SSL_new(SSL_CTX *ctx);
long __real_SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg);
long __wrap_SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg);

SSL *__wrap_SSL_new(SSL_CTX *ctx)
{
    return last_ssl = __real_SSL_new(ctx);
}

long __wrap_SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg)
{
    if (cmd == SSL_CTRL_MODE && (larg & SSL_MODE_RELEASE_BUFFERS)) {
        if (keep_buffers)
            larg &= ~(long)SSL_MODE_RELEASE_BUFFERS;
        release_seen = keep_buffers ? -1 : 1;
    }
    return __real_SSL_CTX_ctrl(ctx, cmd, larg, parg);
}

/* ---- options ---- */

static char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
static sm_tls_options client_tls = { .ca_file = ca };
static sm_tls_options server_tls = { .cert_file = cert, .key_file = key };

static void setup(void)
{
    const char *keep = getenv("BENCH_TLS_KEEP_BUFFERS");
    keep_buffers = keep && strcmp(keep, "1") == 0;
    if (!sm_tls_available())
        bench_die("TLS", "this libsockmsg was built without OpenSSL (make TLS=0)");
    tls_path(ca, "ca.pem");
    tls_path(cert, "server.pem");
    tls_path(key, "server.key");
}

static int failed(const char *what)
{
    fprintf(stderr, "bench-%s: %s: %s\n", t_name, what, sm_last_error());
    return -1;
}

/* The library set up its context just now: was the mode as asked? */
static void check_mode(void)
{
    if (release_seen != (keep_buffers ? -1 : 1))
        bench_die("TLS", "SSL_MODE_RELEASE_BUFFERS was not seen in the library's SSL_CTX_set_mode "
                         "(was the program linked with -Wl,--wrap=SSL_CTX_ctrl?)");
}

/* What the session negotiated, and whether it releases its buffers. */
static void note(SSL *ssl)
{
    tls_note(ssl);
    size_t len = strlen(bench_note);
    snprintf(bench_note + len, sizeof bench_note - len, " release_buffers=%d",
             (SSL_get_mode(ssl) & SSL_MODE_RELEASE_BUFFERS) != 0);
}

static int local_port(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    return colon ? atoi(colon + 1) : -1;
}

/* ---- lat, thr, hs ---- */

struct bench_listener {
    sm_listener *l;
};

struct bench_conn {
    sm_conn *c;
    tls_conn *raw; /* hs raw: raw-tls's connection instead */
    SSL *ssl;      /* the library's session (through SSL_new) */
    void *buf;     /* sm_recv copies the message here */
    size_t cap;
};

int t_listen(bench_listener **l, int *port)
{
    char addr[SM_ADDRSTRLEN];
    sm_options opt = { .tls = &server_tls };
    setup();
    if (!(*l = malloc(sizeof **l)))
        return -1;
    if (sm_listen_opts(&(*l)->l, "127.0.0.1:0", &opt) < 0 ||
        sm_listener_addr((*l)->l, addr, sizeof addr) < 0)
        return failed("listen");
    check_mode();
    *port = local_port(addr);
    return 0;
}

int t_accept(bench_listener *l, bench_conn **c)
{
    sm_conn *sc;
    if (sm_accept(l->l, &sc) < 0)
        return failed("accept");
    if (!(*c = calloc(1, sizeof **c)))
        return -1;
    (*c)->c = sc;
    (*c)->ssl = last_ssl;
    return 0;
}

void t_listener_close(bench_listener *l)
{
    sm_listener_close(l->l);
    free(l);
}

int t_connect(int port, bench_conn **c)
{
    char addr[64];
    sm_options opt = { .tls = &client_tls };
    if (!ca[0])
        setup();
    if (!(*c = calloc(1, sizeof **c)))
        return -1;
    if (raw_client)
        return tls_conn_connect(&(*c)->raw, port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    if (sm_connect_opts(&(*c)->c, addr, &opt) < 0)
        return failed("connect");
    check_mode();
    (*c)->ssl = last_ssl;
    return 0;
}

int t_send(bench_conn *c, const void *msg, size_t len, int more)
{
    if (c->raw)
        return tls_conn_send(c->raw, msg, len);
    return sm_send_flags(c->c, msg, len, more ? SM_MORE : 0);
}

/* The plain API copies into the caller's buffer, as a user would. */
static ssize_t recv_copy(bench_conn *c, const uint8_t **msg)
{
    for (;;) {
        ssize_t len = sm_recv(c->c, c->buf, c->cap);
        if (len != SM_EMSGSIZE) {
            *msg = c->buf;
            return len < 0 ? failed("receive") : len;
        }
        free(c->buf);
        c->cap = c->cap ? c->cap * 2 : 4096;
        if (!(c->buf = malloc(c->cap)))
            return -1;
    }
}

ssize_t t_recv(bench_conn *c, const uint8_t **msg)
{
    if (c->raw)
        return tls_conn_recv(c->raw, msg);
    if (!bench_more)
        return recv_copy(c, msg);
    const void *view;
    ssize_t len = sm_recv_view(c->c, &view);
    *msg = view;
    return len < 0 ? failed("receive") : len;
}

void t_close(bench_conn *c)
{
    if (c->raw) {
        tls_note(tls_conn_ssl(c->raw));
        tls_conn_close(c->raw);
    } else {
        note(c->ssl);
        sm_close(c->c);
    }
    free(c->buf);
    free(c);
}

/* ---- the server workload: sm_server with a TLS listener ---- */

static sm_server *server;

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

static void on_term(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

int t_echo_server(void)
{
    sm_server_handlers h = { .on_message = on_message };
    char addr[SM_ADDRSTRLEN];
    setup();
    if (sm_server_new(&server, &h, NULL, NULL) < 0 ||
        sm_server_listen_tls(server, "127.0.0.1:0", &server_tls) < 0 ||
        sm_server_addr(server, 0, addr, sizeof addr) < 0)
        return failed("server");
    check_mode();
    signal(SIGTERM, on_term);
    bench_ready(local_port(addr));
    int rc = sm_server_run(server);
    sm_server_stats st;
    sm_server_get_stats(server, &st);
    sm_server_free(server);
    if (st.tls_failed) {
        fprintf(stderr, "bench-%s: %llu TLS handshakes failed\n", t_name,
                (unsigned long long)st.tls_failed);
        return -1;
    }
    return rc < 0 ? failed("server run") : 0;
}

int t_echo_clients(int port, pid_t server_pid, int conns, int rounds, struct bench_echo_result *r)
{
    return tls_echo_clients(port, server_pid, conns, rounds, r);
}

/* The conn workload's clients speak plain framing. */
int t_conn_clients(int port, int conns, int echoes, int raw, struct bench_conn_result *r)
{
    (void)port, (void)conns, (void)echoes, (void)raw, (void)r;
    return BENCH_UNSUPPORTED;
}

/* The library's blocking client (sm_connect_opts with sm_options.tls, which
 * makes its context, the CA file read, for every connection), or with raw
 * raw-tls's (one context for all).  Either way a full handshake each. */
int t_hs_clients(int port, int count, int echoes, int raw, struct bench_hs_result *r)
{
    raw_client = raw;
    if (raw)
        tls_client_ctx(); /* made once, before the clock starts */
    return bench_hs_clients(port, count, echoes, r);
}

/* Dialled links (sm_server_connect) have no TLS option. */
int t_links(int conns, int rounds, int dialled, struct bench_links_result *r)
{
    (void)conns, (void)rounds, (void)dialled, (void)r;
    return BENCH_UNSUPPORTED;
}

int t_reconnect(int pause_ms, int times, struct bench_reconnect_result *r)
{
    (void)pause_ms, (void)times, (void)r;
    return BENCH_UNSUPPORTED;
}
