#include "tlssock.h"
#include "rawsock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define CERTS_LIMIT_S 60 /* making the certificates may take no longer */
#define RUN_LIMIT_S 300  /* as bench.c's */
/* The server workload's clients have at most this many handshakes in
 * flight while they connect (BENCH_TLS_WAVE overrides it), so that the
 * server's RSS, taken once they are idle, is what idle connections keep
 * rather than the high-water mark of a thousand handshakes at once, which
 * the heap keeps after they are done. */
#define TLS_WAVE 16

/* ---- the run's certificates ---- */

static char cert_dir[PATH_MAX];
static pid_t cert_owner; /* the process that made cert_dir, 0: not ours */

static void remove_certs(void)
{
    if (cert_owner != getpid())
        return; /* a child (they leave by _exit anyway) */
    DIR *d = opendir(cert_dir);
    struct dirent *e;
    char path[PATH_MAX + 256];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", cert_dir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    rmdir(cert_dir);
}

/* Runs the script into cert_dir, waiting at most CERTS_LIMIT_S. */
static int make_certs(const char *script)
{
    char *argv[] = { "sh", (char *)script, cert_dir, NULL };
    pid_t pid;
    int status;
    if (posix_spawnp(&pid, "sh", NULL, NULL, argv, environ) != 0)
        return -1;
    for (int waited = 0;; waited += 10) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
        if (got < 0 && errno != EINTR)
            return -1;
        if (waited > CERTS_LIMIT_S * 1000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
}

/* Before main, so the server child of every workload sees the same files
 * as its parent. */
__attribute__((constructor)) static void certs_setup(void)
{
    const char *dir = getenv("BENCH_TLS_DIR");
    if (dir && dir[0]) {
        snprintf(cert_dir, sizeof cert_dir, "%s", dir);
        return;
    }
    const char *script = getenv("BENCH_TLS_CERTS");
    if (!script || !script[0])
        script = "tests/tls/make-certs.sh";
    snprintf(cert_dir, sizeof cert_dir, "%s/sockmsg-bench-tls.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(cert_dir)) {
        fprintf(stderr, "bench: TLS certificates: mkdtemp: %s\n", strerror(errno));
        exit(1);
    }
    cert_owner = getpid();
    atexit(remove_certs);
    if (make_certs(script) < 0) {
        fprintf(stderr,
                "bench: TLS certificates: %s failed (set BENCH_TLS_DIR to a directory it "
                "made, or BENCH_TLS_CERTS to the script)\n",
                script);
        exit(1);
    }
}

void tls_path(char *buf, const char *name)
{
    int n = snprintf(buf, PATH_MAX, "%s/%s", cert_dir, name);
    if (n < 0 || n >= PATH_MAX)
        bench_die("TLS certificates", "path too long");
}

/* ---- contexts and sessions ---- */

int tls_fail(const char *what)
{
    char reason[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    fprintf(stderr, "bench-%s: TLS %s: %s\n", t_name, what,
            reason[0] ? reason
            : errno   ? strerror(errno)
                      : "failed");
    return -1;
}

SSL_CTX *tls_client_ctx(void)
{
    static SSL_CTX *ctx;
    char ca[PATH_MAX];
    if (ctx)
        return ctx;
    tls_path(ca, "ca.pem");
    if (!(ctx = SSL_CTX_new(TLS_client_method())) ||
        SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        tls_fail("client context");
        exit(1);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

SSL_CTX *tls_server_ctx(void)
{
    static SSL_CTX *ctx;
    char cert[PATH_MAX], key[PATH_MAX];
    if (ctx)
        return ctx;
    tls_path(cert, "server.pem");
    tls_path(key, "server.key");
    if (!(ctx = SSL_CTX_new(TLS_server_method())) ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        tls_fail("server context");
        exit(1);
    }
    return ctx;
}

SSL *tls_client_session(int fd)
{
    SSL *ssl = SSL_new(tls_client_ctx());
    if (!ssl || SSL_set_fd(ssl, fd) != 1 ||
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1") != 1) {
        SSL_free(ssl);
        tls_fail("client session");
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

void tls_note(SSL *ssl)
{
    const char *group = OBJ_nid2sn(SSL_get_negotiated_group(ssl) & ~TLSEXT_nid_unknown);
    snprintf(bench_note, sizeof bench_note, "tls=%s cipher=%s group=%s", SSL_get_version(ssl),
             SSL_get_cipher_name(ssl), group ? group : "?");
}

/* ---- the raw OpenSSL connection ---- */

struct tls_conn {
    int fd;
    SSL *ssl;
    uint8_t *buf;
    size_t cap;
};

static int conn_fail(tls_conn *c, int fd, const char *what)
{
    tls_fail(what);
    if (c)
        SSL_free(c->ssl);
    free(c);
    if (fd >= 0)
        close(fd);
    return -1;
}

int tls_conn_connect(tls_conn **c, int port)
{
    int fd = raw_connect(port);
    if (fd < 0 || !(*c = calloc(1, sizeof **c)))
        return conn_fail(NULL, fd, "connect");
    (*c)->fd = fd;
    if (!((*c)->ssl = tls_client_session(fd)) || SSL_connect((*c)->ssl) != 1)
        return conn_fail(*c, fd, "handshake (client)");
    return 0;
}

int tls_conn_accept(tls_conn **c, int listen_fd)
{
    int fd = raw_accept(listen_fd);
    if (fd < 0 || !(*c = calloc(1, sizeof **c)))
        return conn_fail(NULL, fd, "accept");
    (*c)->fd = fd;
    if (!((*c)->ssl = SSL_new(tls_server_ctx())) || SSL_set_fd((*c)->ssl, fd) != 1 ||
        SSL_accept((*c)->ssl) != 1)
        return conn_fail(*c, fd, "handshake (server)");
    return 0;
}

static int write_all(SSL *ssl, const void *buf, size_t len)
{
    size_t n;
    /* Blocking, without SSL_MODE_ENABLE_PARTIAL_WRITE: all of it, or an error. */
    if (len > 0 && (SSL_write_ex(ssl, buf, len, &n) != 1 || n != len))
        return tls_fail("write");
    return 0;
}

static int read_exact(SSL *ssl, void *buf, size_t len)
{
    for (size_t done = 0, n; done < len; done += n)
        if (SSL_read_ex(ssl, (uint8_t *)buf + done, len - done, &n) != 1)
            return tls_fail("read");
    return 0;
}

int tls_conn_send(tls_conn *c, const void *msg, size_t len)
{
    uint8_t h[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                     (uint8_t)len };
    return write_all(c->ssl, h, 4) < 0 ? -1 : write_all(c->ssl, msg, len);
}

ssize_t tls_conn_recv(tls_conn *c, const uint8_t **msg)
{
    uint8_t h[4];
    if (read_exact(c->ssl, h, 4) < 0)
        return -1;
    size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (len > c->cap) {
        uint8_t *p = realloc(c->buf, len);
        if (!p)
            return -1;
        c->buf = p;
        c->cap = len;
    }
    if (read_exact(c->ssl, c->buf, len) < 0)
        return -1;
    *msg = c->buf;
    return (ssize_t)len;
}

void tls_conn_close(tls_conn *c)
{
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    ERR_clear_error();
    close(c->fd);
    free(c->buf);
    free(c);
}

SSL *tls_conn_ssl(tls_conn *c)
{
    return c->ssl;
}

/* ---- the server workload's TLS clients ---- */

#define FRAME (4 + BENCH_ECHO_SIZE)

struct tls_client {
    int fd;
    SSL *ssl;
    int trips;       /* completed round trips */
    int handshaking; /* the handshake is not done yet */
    uint32_t events; /* what epoll watches */
    size_t got;      /* bytes of the reply in reply[] */
    uint8_t reply[FRAME];
};

static int watch(int ep, struct tls_client *k, int i, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.u32 = (uint32_t)i };
    int op = k->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (events == k->events)
        return 0;
    k->events = events;
    return epoll_ctl(ep, op, k->fd, &ev);
}

/* What a non-blocking SSL call's failure asks for: EPOLLIN or EPOLLOUT, or
 * 0 when it failed. */
static uint32_t wants(SSL *ssl, int ret)
{
    int err = SSL_get_error(ssl, ret);
    return err == SSL_ERROR_WANT_READ ? EPOLLIN : err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0;
}

/* One step of client i's handshake: 1 when done, 0 to wait, -1 failed. */
static int handshake_step(int ep, struct tls_client *k, int i)
{
    int ret = SSL_do_handshake(k->ssl);
    if (ret == 1) {
        k->handshaking = 0;
        return watch(ep, k, i, EPOLLIN) < 0 ? -1 : 1;
    }
    uint32_t want = wants(k->ssl, ret);
    if (!want)
        return tls_fail("handshake (client)");
    return watch(ep, k, i, want) < 0 ? -1 : 0;
}

static int tls_request(struct tls_client *k, int i)
{
    uint8_t frame[FRAME] = { 0, 0, 0, BENCH_ECHO_SIZE };
    size_t n = 0;
    bench_fill(frame + 4, BENCH_ECHO_SIZE, bench_echo_seq(i, k->trips));
    k->got = 0;
    /* 68 bytes into an empty socket buffer: written whole. */
    return SSL_write_ex(k->ssl, frame, FRAME, &n) == 1 && n == FRAME ? 0 : tls_fail("request");
}

/* Reads what is there; 1 when the whole echo has arrived and is right. */
static int tls_reply(struct tls_client *k, int i)
{
    while (k->got < FRAME) {
        size_t n = 0;
        int ret = SSL_read_ex(k->ssl, k->reply + k->got, FRAME - k->got, &n);
        if (ret != 1)
            return wants(k->ssl, ret) == EPOLLIN ? 0 : tls_fail("reply");
        k->got += n;
    }
    if (bench_check(k->reply + 4, FRAME - 4, BENCH_ECHO_SIZE, bench_echo_seq(i, k->trips), 1) < 0 ||
        k->reply[3] != BENCH_ECHO_SIZE) {
        fprintf(stderr, "bench-%s: TLS client %d: wrong echo\n", t_name, i);
        return -1;
    }
    k->trips++;
    return 1;
}

/* Every client has one request in flight until each has done `rounds`
 * more round trips; returns the seconds it took, or -1. */
static double tls_rounds(struct tls_client *cl, int conns, int ep, int rounds)
{
    struct epoll_event ev[256];
    int target = cl[0].trips + rounds, busy = conns;
    double t0 = bench_now();
    for (int i = 0; i < conns; i++)
        if (tls_request(&cl[i], i) < 0)
            return -1;
    while (busy > 0) {
        if (bench_now() - t0 > RUN_LIMIT_S)
            return -1;
        int n = epoll_wait(ep, ev, 256, 1000);
        for (int j = 0; j < n; j++) {
            int i = (int)ev[j].data.u32;
            int rc = tls_reply(&cl[i], i);
            if (rc < 0)
                return -1;
            if (rc == 1 && cl[i].trips < target && tls_request(&cl[i], i) < 0)
                return -1;
            if (rc == 1 && cl[i].trips == target)
                busy--;
        }
    }
    return bench_now() - t0;
}

/* A client whose handshake is done, readable before its first request:
 * the server's session tickets, taken now so that they are not reported
 * again and again.  0, or -1 when it was anything else. */
static int take_tickets(struct tls_client *k)
{
    size_t n = 0;
    int ret = SSL_read_ex(k->ssl, k->reply, FRAME, &n);
    return ret != 1 && wants(k->ssl, ret) == EPOLLIN ? 0 : tls_fail("before the first request");
}

/* Opens every connection and finishes every handshake, at most `wave`
 * handshakes in flight at once; 0 or -1. */
static int tls_open(struct tls_client *cl, int port, int conns, int wave, int ep, int *opened)
{
    struct epoll_event ev[256];
    int pending = 0;
    double t0 = bench_now();
    while (*opened < conns || pending > 0) {
        if (bench_now() - t0 > RUN_LIMIT_S)
            return -1;
        for (; *opened < conns && pending < wave; (*opened)++) {
            struct tls_client *k = &cl[*opened];
            /* Connected as the plain clients are (raw_connect sets TCP_NODELAY). */
            if ((k->fd = raw_connect(port)) < 0 || fcntl(k->fd, F_SETFL, O_NONBLOCK) < 0 ||
                !(k->ssl = tls_client_session(k->fd)))
                return -1;
            k->handshaking = 1;
            int rc = handshake_step(ep, k, *opened);
            if (rc < 0)
                return -1;
            pending += rc == 0;
        }
        int n = epoll_wait(ep, ev, 256, 1000);
        for (int j = 0; j < n; j++) {
            int i = (int)ev[j].data.u32;
            int rc = cl[i].handshaking ? handshake_step(ep, &cl[i], i) : take_tickets(&cl[i]);
            if (rc < 0)
                return -1;
            pending -= rc;
        }
    }
    return 0;
}

int tls_echo_clients(int port, pid_t server, int conns, int rounds, struct bench_echo_result *r)
{
    struct tls_client *cl = calloc((size_t)conns, sizeof *cl);
    int ep = epoll_create1(EPOLL_CLOEXEC), rc = -1, opened = 0;
    long rss_before = bench_rss_kib(server);
    double t0 = bench_now();
    const char *w = getenv("BENCH_TLS_WAVE");
    int wave = w && atoi(w) > 0 ? atoi(w) : TLS_WAVE;
    if (!cl || ep < 0 || tls_open(cl, port, conns, wave, ep, &opened) < 0) {
        fprintf(stderr, "bench-%s: TLS clients: %d of %d opened: %s\n", t_name, opened, conns,
                strerror(errno));
        goto out;
    }
    r->open_s = bench_now() - t0;
    tls_note(cl[0].ssl);
    /* One round trip each, so the server has seen every client; then it
     * is measured with all of them idle. */
    if (tls_rounds(cl, conns, ep, 1) < 0)
        goto out;
    usleep(200000);
    r->rss_kib_per_conn = (double)(bench_rss_kib(server) - rss_before) / conns;
    double t = tls_rounds(cl, conns, ep, rounds);
    if (t > 0) {
        r->trips_per_s = (double)conns * rounds / t;
        rc = 0;
    }
out:
    for (int i = 0; cl && i < opened + (opened < conns); i++) {
        if (cl[i].ssl) {
            SSL_shutdown(cl[i].ssl);
            SSL_free(cl[i].ssl);
        }
        if (cl[i].fd > 0)
            close(cl[i].fd);
    }
    ERR_clear_error();
    if (ep >= 0)
        close(ep);
    free(cl);
    return rc;
}
