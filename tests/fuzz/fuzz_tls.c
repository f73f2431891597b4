/*
 * A TLS listener's handshake path, through the server's loop: a server
 * listening with TLS on a Unix socket, one client connected to it, and the
 * input written to that client's socket in chunks while
 * sm_server_run_once(s, 0) runs between them.  Raw bytes reach the
 * server's TLS records and handshake parsing (the ClientHello and its
 * extensions, alerts, and over TLS 1.2 a client's certificate).  In the
 * real-client mode an OpenSSL client in this process does the handshake
 * first and the input then goes through it as application data, so the
 * decryption, the framing, the echo and the close paths behind it run too.
 * Coverage guides by the library's code only: the system's OpenSSL is not
 * instrumented, so its parsers are reached by the seeds' mutations alone.
 *
 * Checked besides what the sanitizers catch: the library never raises
 * SIGPIPE (its header promises so; a SIGPIPE aborts, so the input is
 * kept), on_close comes only after on_open and for every on_open, a
 * client whose peer has gone leaves the server within a bounded number
 * of loop iterations, and every loop in here is bounded.
 *
 * The certificate and key are made once, in process: an EC P-256 key and
 * a self-signed certificate in a temporary directory (removed at exit;
 * nothing is committed).  SSL_CERT_FILE points at that certificate, so a
 * server without CAs does not parse the system's store.  A TLS context
 * costs milliseconds (OpenSSL 3), so there is one server per
 * configuration, made on first use and kept: every input starts with no
 * client on it and must end so, or the input fails.
 *
 * Input: [mode] [chunk size - 1] [stream], the stream written in chunks
 * of that size.  Mode bits:
 *   0x01  real client: handshake first, then the stream is its plaintext
 *   0x06  server: 0 certificate only, 2 also a CA (asks for a client's
 *         certificate), 4 mutual TLS (requires one), 6 a CA directory
 *         without hashed names (a client's certificate never verifies)
 *   0x08  the real client speaks TLS 1.2 at most
 *   0x10  the real client shows the certificate when asked
 *   0x20  at the end the peer vanishes (close) instead of a half-close
 *   0x40  at the end the server stops (sm_server_stop: every client
 *         closed) with the client still there
 * The plaintext is frames (4-byte big-endian length, payload); a message's
 * first byte says what the handler does: echo, disconnect, nothing or
 * broadcast.
 */
#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum {
    STEPS = 64,   /* loop iterations a phase may take at most */
    RETRIES = 16, /* tries of a send the socket will not take now */
};

enum { CONFIGS = 4 };

static char dir[64];
static char cert_path[96], key_path[96];
static EVP_PKEY *key;
static X509 *cert;
static SSL_CTX *client_ctx;
static sm_server *servers[CONFIGS];
static char sock_paths[CONFIGS][96];

struct run {
    sm_server *s;
    int fd;          /* our end, the client's socket */
    SSL *ssl;        /* the real client, or NULL */
    BIO *in, *out;   /* its memory BIOs: from the server, to the server */
    int gone;        /* the server closed or reset: nothing more to send */
    unsigned opened; /* on_open calls */
    unsigned closed; /* on_close calls */
};

/* The input being run: the servers' handlers see it. */
static struct run *current;

/* ---- setup, once ---- */

static void remove_files(void)
{
    for (int i = 0; i < CONFIGS; i++) {
        sm_server_free(servers[i]); /* removes its socket file */
        servers[i] = NULL;
    }
    SSL_CTX_free(client_ctx);
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir);
}

static void on_sigpipe(int sig)
{
    (void)sig;
    static const char msg[] = "fuzz_tls: SIGPIPE raised, which libsockmsg promises never to do\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing more to say */
    }
    abort();
}

static void write_pem(const char *path, int private_key)
{
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    int ok = private_key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_X509(f, cert);
    if (fclose(f) != 0 || ok != 1)
        abort();
}

static void make_identity(void)
{
    key = EVP_EC_gen("P-256");
    cert = X509_new();
    if (!key || !cert || X509_set_version(cert, 2) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), 30L * 24 * 3600))
        abort();
    X509_NAME *name = X509_get_subject_name(cert);
    const unsigned char *cn = (const unsigned char *)"localhost";
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, cn, -1, -1, 0) != 1 ||
        X509_set_issuer_name(cert, name) != 1 || X509_set_pubkey(cert, key) != 1 ||
        X509_sign(cert, key, EVP_sha256()) <= 0)
        abort();
    write_pem(cert_path, 0);
    write_pem(key_path, 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct sigaction sa = { .sa_handler = on_sigpipe };
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        abort();
    snprintf(dir, sizeof dir, "/tmp/sm-fuzz-tls-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
    snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
    for (int i = 0; i < CONFIGS; i++)
        snprintf(sock_paths[i], sizeof sock_paths[i], "%s/%d.sock", dir, i);
    atexit(remove_files);
    make_identity();
    if (setenv("SSL_CERT_FILE", cert_path, 1) != 0 || setenv("SSL_CERT_DIR", dir, 1) != 0)
        abort();
    client_ctx = SSL_CTX_new(TLS_client_method());
    if (!client_ctx)
        abort();
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    return 0;
}

/* ---- the server's handlers ---- */

static void on_open(sm_server *s, sm_conn_id id, void *arg)
{
    (void)arg;
    struct run *r = current;
    char subject[256];
    r->opened++;
    int rc = sm_server_peer_cert(s, id, subject, sizeof subject);
    if (rc != SM_EVERIFY && (rc < 0 || (size_t)rc >= sizeof subject))
        abort();
}

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    const uint8_t *m = msg;
    switch (len ? m[0] % 4 : 0) {
    case 0: sm_server_send(s, id, msg, len); break;
    case 1: sm_server_disconnect(s, id); break;
    case 2: break;
    default: sm_server_broadcast(s, msg, len, 0); break;
    }
}

static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)reason;
    (void)arg;
    struct run *r = current;
    r->closed++;
    if (r->closed > r->opened)
        abort(); /* a client that never opened must leave quietly */
    if (sm_server_send(s, id, "x", 1) != SM_ENOCONN)
        abort();
}

/* ---- our end ---- */

static void step(struct run *r)
{
    if (sm_server_run_once(r->s, 0) < 0)
        abort();
}

/* Takes what the server sent: into the real client, or away. */
static void drain(struct run *r)
{
    uint8_t buf[16384];
    for (int i = 0; i < STEPS && !r->gone; i++) {
        ssize_t n = recv(r->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            r->gone = 1; /* closed (0) or reset */
            break;
        }
        if (r->ssl && BIO_write(r->in, buf, (int)n) != (int)n)
            abort();
    }
    /* Past the handshake, the client reads (and drops) what came. */
    for (int i = 0; r->ssl && SSL_is_init_finished(r->ssl) && i < STEPS; i++)
        if (SSL_read(r->ssl, buf, sizeof buf) <= 0)
            break;
}

/* Sends bytes, running the loop while the socket will not take them. */
static void send_all(struct run *r, const uint8_t *p, size_t len)
{
    for (int tries = 0; len && !r->gone && tries < RETRIES;) {
        ssize_t n = send(r->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            r->gone = 1;
            return;
        }
        tries++;
        step(r);
        drain(r);
    }
}

/* Sends what the real client wrote into its outgoing BIO. */
static void flush_client(struct run *r)
{
    uint8_t buf[16384];
    int n;
    while ((n = BIO_read(r->out, buf, sizeof buf)) > 0)
        send_all(r, buf, (size_t)n);
}

static void start_client(struct run *r, unsigned mode)
{
    r->ssl = SSL_new(client_ctx);
    r->in = BIO_new(BIO_s_mem());
    r->out = BIO_new(BIO_s_mem());
    if (!r->ssl || !r->in || !r->out)
        abort();
    SSL_set_bio(r->ssl, r->in, r->out); /* the SSL owns them now */
    SSL_set_connect_state(r->ssl);
    if ((mode & 0x08) && SSL_set_max_proto_version(r->ssl, TLS1_2_VERSION) != 1)
        abort();
    if ((mode & 0x10) &&
        (SSL_use_certificate(r->ssl, cert) != 1 || SSL_use_PrivateKey(r->ssl, key) != 1))
        abort();
    for (int i = 0; i < STEPS && !r->gone; i++) {
        int ret = SSL_do_handshake(r->ssl);
        flush_client(r);
        if (ret == 1 || SSL_get_error(r->ssl, ret) != SSL_ERROR_WANT_READ)
            break; /* done, or failed: the stream then goes raw */
        step(r);
        drain(r);
    }
    /* TLS 1.3: the server takes the client's Finished on its next turn. */
    step(r);
    drain(r);
}

/* One chunk: as the real client's plaintext, or raw. */
static void send_chunk(struct run *r, const uint8_t *p, size_t len)
{
    if (r->ssl && SSL_is_init_finished(r->ssl)) {
        size_t written = 0;
        if (SSL_write_ex(r->ssl, p, len, &written) != 1)
            ERR_clear_error();
        flush_client(r);
    } else {
        send_all(r, p, len);
    }
    step(r);
    drain(r);
}

static size_t conns(const sm_server *s)
{
    sm_server_stats st;
    sm_server_get_stats(s, &st);
    return st.conns;
}

/* The server for configuration i (see the mode bits), made on first use. */
static sm_server *server_for(unsigned i)
{
    if (servers[i])
        return servers[i];
    sm_server_handlers h = { .on_open = on_open, .on_message = on_message, .on_close = on_close };
    /* Small limits, so the fuzzer reaches them. */
    sm_server_options o = { .max_frame = 300, .high_water = 600, .max_queue = 2000 };
    sm_tls_options tls = { .cert_file = cert_path, .key_file = key_path };
    tls.ca_file = i == 1 || i == 2 ? cert_path : NULL;
    tls.ca_dir = i == 3 ? dir : NULL;
    tls.require_client_cert = i == 2;
    char addr[104];
    snprintf(addr, sizeof addr, "unix:%s", sock_paths[i]);
    if (sm_server_new(&servers[i], &h, &o, NULL) != 0 ||
        sm_server_listen_tls(servers[i], addr, &tls) < 0)
        abort();
    return servers[i];
}

static int connect_to(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&a, sizeof a) != 0)
        abort();
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned mode = data[0];
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;

    unsigned config = (mode >> 1) & 3;
    struct run r = { .s = server_for(config), .fd = -1 };
    current = &r;
    if (conns(r.s) != 0)
        abort(); /* the last input left a client behind */
    r.fd = connect_to(sock_paths[config]);
    for (int i = 0; i < STEPS && conns(r.s) == 0; i++)
        step(&r);
    if (conns(r.s) != 1)
        abort(); /* never accepted */

    if (mode & 0x01)
        start_client(&r, mode);
    for (size_t pos = 0; pos < size; pos += chunk)
        send_chunk(&r, data + pos, size - pos < chunk ? size - pos : chunk);

    if (mode & 0x40) {
        sm_server_stop(r.s);
        if (sm_server_run_once(r.s, 0) != SM_ESTOPPED)
            abort();
    } else if (mode & 0x20) {
        close(r.fd);
        r.fd = -1;
        r.gone = 1;
    } else {
        if (r.ssl && SSL_is_init_finished(r.ssl)) {
            SSL_shutdown(r.ssl); /* close_notify */
            flush_client(&r);
        }
        shutdown(r.fd, SHUT_WR);
    }
    /* The peer has gone or half-closed: the client must leave soon. */
    for (int i = 0; i < STEPS && conns(r.s); i++) {
        step(&r);
        drain(&r);
    }
    if (conns(r.s))
        abort(); /* still there, long after its peer went */
    if (r.closed != r.opened)
        abort(); /* an open client left without on_close */
    if (r.fd >= 0)
        close(r.fd);
    SSL_free(r.ssl);
    ERR_clear_error();
    current = NULL;
    return 0;
}
