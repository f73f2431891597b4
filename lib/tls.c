#include "tls.h"

#include "error.h"
#include "sock.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define HANDSHAKE_MS 10000

#ifndef SM_HAVE_TLS

static int no_tls(void)
{
    return sm__error_set(SM_ENOTLS, "TLS: libsockmsg was built without OpenSSL (make TLS=0)");
}

SM_API int sm_tls_available(void)
{
    return 0;
}

int sm__tls_ctx_new(sm_tls_ctx **out, const sm_tls_options *o, int server)
{
    (void)o;
    (void)server;
    *out = NULL;
    return no_tls();
}

sm_tls_ctx *sm__tls_ctx_ref(sm_tls_ctx *ctx)
{
    return ctx;
}

void sm__tls_ctx_unref(sm_tls_ctx *ctx)
{
    (void)ctx;
}

int sm__tls_ctx_handshake_ms(const sm_tls_ctx *ctx)
{
    (void)ctx;
    return HANDSHAKE_MS;
}

int sm__tls_new(sm_tls **out, sm_tls_ctx *ctx, int fd, const char *host)
{
    (void)ctx;
    (void)fd;
    (void)host;
    *out = NULL;
    return no_tls();
}

void sm__tls_free(sm_tls *t)
{
    (void)t;
}

int sm__tls_handshake(sm_tls *t, short *want)
{
    (void)t;
    (void)want;
    return no_tls();
}

int sm__tls_handshake_wait(sm_tls *t, int fd, int64_t deadline)
{
    (void)t;
    (void)fd;
    (void)deadline;
    return no_tls();
}

ssize_t sm__tls_read(sm_tls *t, void *buf, size_t len, short *want)
{
    (void)t;
    (void)buf;
    (void)len;
    (void)want;
    return no_tls();
}

ssize_t sm__tls_write(sm_tls *t, const void *buf, size_t len, short *want)
{
    (void)t;
    (void)buf;
    (void)len;
    (void)want;
    return no_tls();
}

ssize_t sm__tls_read_wait(sm_tls *t, int fd, void *buf, size_t len, int64_t deadline)
{
    (void)t;
    (void)fd;
    (void)buf;
    (void)len;
    (void)deadline;
    return no_tls();
}

int sm__tls_write_all(sm_tls *t, int fd, struct iovec *iov, int iovcnt, int64_t deadline,
                      size_t *sent)
{
    (void)t;
    (void)fd;
    (void)iov;
    (void)iovcnt;
    (void)deadline;
    *sent = 0;
    return no_tls();
}

int sm__tls_peer_subject(const sm_tls *t, char *buf, size_t len)
{
    (void)t;
    (void)buf;
    (void)len;
    return no_tls();
}

#else

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

struct sm_tls_ctx {
    SSL_CTX *ssl;
    atomic_int refs;
    int server;
    int handshake_ms;
    char server_name[256]; /* the options' name to verify, or "" */
};

struct sm_tls {
    SSL *ssl;
    /* OpenSSL's SSL is not safe for a read in one thread while another
     * writes, and the blocking API allows exactly that: every SSL call on
     * a session holds this lock (never while waiting for the socket). */
    pthread_mutex_t lock;
};

SM_API int sm_tls_available(void)
{
    return 1;
}

/* OpenSSL's socket BIO writes with write(), which raises SIGPIPE when the
 * peer has gone, and the library promises never to.  This BIO is the
 * same but for send(MSG_NOSIGNAL). */
static int bio_write(BIO *b, const char *buf, int len)
{
    ssize_t n = send(BIO_get_fd(b, NULL), buf, (size_t)len, MSG_NOSIGNAL);
    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    ssize_t n = recv(BIO_get_fd(b, NULL), buf, (size_t)len, 0);
    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    return (int)n;
}

static BIO_METHOD *quiet_socket;
static pthread_once_t quiet_socket_once = PTHREAD_ONCE_INIT;

/* A copy of the socket BIO's method with our read and write. */
static void make_quiet_socket(void)
{
    const BIO_METHOD *plain = BIO_s_socket();
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "sockmsg socket");
    if (!m)
        return;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(plain));
    BIO_meth_set_create(m, BIO_meth_get_create(plain));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(plain));
    quiet_socket = m;
}

/* A BIO on fd that never raises SIGPIPE; NULL if out of memory. */
static BIO *quiet_bio(int fd)
{
    pthread_once(&quiet_socket_once, make_quiet_socket);
    BIO *b = quiet_socket ? BIO_new(quiet_socket) : NULL;
    if (b)
        BIO_set_fd(b, fd, BIO_NOCLOSE);
    return b;
}

/* OpenSSL's first queued reason, or what fallback says. */
static int tls_error(int rc, const char *what)
{
    char reason[200] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    return sm__error_set(rc, "TLS %s%s%s", what, reason[0] ? ": " : "", reason);
}

/* Names the file that failed: OpenSSL's reason does not. */
static int file_error(const char *what, const char *path)
{
    char where[300];
    snprintf(where, sizeof where, "%s %s", what, path ? path : "");
    return tls_error(SM_ETLS, where);
}

static int load_files(SSL_CTX *ssl, const sm_tls_options *o, int server)
{
    if ((o->ca_file || o->ca_dir) && SSL_CTX_load_verify_locations(ssl, o->ca_file, o->ca_dir) != 1)
        return file_error("CA file or directory", o->ca_file ? o->ca_file : o->ca_dir);
    /* A server without CAs verifies no one: loading the system store would
     * only make OpenSSL search it on every handshake. */
    if (!server && !o->ca_file && !o->ca_dir && SSL_CTX_set_default_verify_paths(ssl) != 1)
        return tls_error(SM_ETLS, "system CA store");
    if (o->cert_file && SSL_CTX_use_certificate_chain_file(ssl, o->cert_file) != 1)
        return file_error("certificate file", o->cert_file);
    if (o->key_file && SSL_CTX_use_PrivateKey_file(ssl, o->key_file, SSL_FILETYPE_PEM) != 1)
        return file_error("key file", o->key_file);
    if (o->cert_file && SSL_CTX_check_private_key(ssl) != 1)
        return file_error("key does not match the certificate", o->cert_file);
    return 0;
}

/* Verification is on unless the options say, loudly, to skip it: a client
 * always checks the server; a server with CAs checks the certificate a
 * client shows, and with require_client_cert insists on one (mutual TLS). */
static void set_verify(SSL_CTX *ssl, const sm_tls_options *o, int server)
{
    int mode = SSL_VERIFY_NONE;
    if (!server && !o->insecure_skip_verify)
        mode = SSL_VERIFY_PEER;
    if (server && (o->ca_file || o->ca_dir))
        mode = SSL_VERIFY_PEER; /* a client may show a certificate: it must verify */
    if (server && o->require_client_cert)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ssl, mode, NULL);
}

static int ctx_make(sm_tls_ctx **out, const sm_tls_options *o, int server)
{
    *out = NULL;
    if (server && (!o->cert_file || !o->key_file))
        return sm__error_set(SM_EINVAL, "TLS: a server needs cert_file and key_file");
    if (server && o->require_client_cert && !o->ca_file && !o->ca_dir)
        return sm__error_set(SM_EINVAL, "TLS: require_client_cert needs ca_file or ca_dir");
    if (o->handshake_timeout_ms < 0)
        return sm__error_set(SM_EINVAL, "TLS: negative handshake timeout");
    sm_tls_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return sm__error_set(SM_ENOMEM, "TLS context");
    ctx->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx->ssl) {
        free(ctx);
        return tls_error(SM_ENOMEM, "context");
    }
    SSL_CTX_set_min_proto_version(ctx->ssl, TLS1_2_VERSION);
    /* Partial writes, from a queue that may move between tries; buffers
     * given back while a connection is idle; a peer that closes without
     * close_notify is an end of stream (the framing tells a cut frame). */
    SSL_CTX_set_mode(ctx->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                   SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* No TLS 1.3 session tickets: a client that only sends would close
     * with them unread, and the kernel would then reset the connection,
     * losing what the server had not read yet. */
    if (server)
        SSL_CTX_set_num_tickets(ctx->ssl, 0);
    int rc = load_files(ctx->ssl, o, server);
    if (rc) {
        SSL_CTX_free(ctx->ssl);
        free(ctx);
        return rc;
    }
    set_verify(ctx->ssl, o, server);
    atomic_init(&ctx->refs, 1);
    ctx->server = server;
    ctx->handshake_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms : HANDSHAKE_MS;
    if (o->server_name)
        snprintf(ctx->server_name, sizeof ctx->server_name, "%s", o->server_name);
    *out = ctx;
    return 0;
}

/* ---- the last client context, kept for the next connect ---- */

/* Making a client context costs about as much as the handshake itself
 * (OpenSSL 3 looks up its algorithms, the CAs are parsed), so a client
 * that connects again and again with the same options reuses the last
 * one, for as long as none of the files it was made from changed on disk.
 * A file changed in the last few seconds is not trusted to show a new
 * modification time on its next change (timestamps are coarse), so a
 * context made from one is not kept. */
#define KEY_CAP 8192
#define SETTLED_S 3

static pthread_mutex_t client_lock = PTHREAD_MUTEX_INITIALIZER;
static sm_tls_ctx *client_ctx;       /* client_lock */
static char client_ctx_key[KEY_CAP]; /* client_lock */

/* Appends one file's name and identity to the key; -1 if it changed too
 * recently to be keyed. */
static int key_file(char *key, size_t cap, size_t *len, const char *path, time_t now)
{
    struct stat st = { 0 };
    int found = path && stat(path, &st) == 0;
    if (found && now - st.st_mtim.tv_sec < SETTLED_S)
        return -1;
    int n = snprintf(key + *len, cap - *len, "%s %d %lu %lu %lld %lld.%09ld|", path ? path : "",
                     found, (unsigned long)st.st_dev, (unsigned long)st.st_ino,
                     (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (n < 0 || (size_t)n >= cap - *len)
        return -1;
    *len += (size_t)n;
    return 0;
}

/* Where OpenSSL finds the system store: its environment variable, as
 * SSL_CTX_set_default_verify_paths reads it, or the built-in path. */
static const char *system_store(const char *env_name, const char *built_in)
{
    const char *set = getenv(env_name);
    return set ? set : built_in;
}

/* Everything a client context is made from, as text: the options and
 * each file's identity (the system store's when no CAs are named).
 * Returns 0, or -1 if it cannot be keyed (then it is not kept). */
static int client_key(char *key, size_t cap, const sm_tls_options *o)
{
    int system = !o->ca_file && !o->ca_dir;
    const char *files[] = {
        o->ca_file,
        o->ca_dir,
        o->cert_file,
        o->key_file,
        system ? system_store(X509_get_default_cert_file_env(), X509_get_default_cert_file())
               : NULL,
        system ? system_store(X509_get_default_cert_dir_env(), X509_get_default_cert_dir()) : NULL,
    };
    int n = snprintf(key, cap, "%d %d %s|", o->insecure_skip_verify, o->handshake_timeout_ms,
                     o->server_name ? o->server_name : "");
    if (n < 0 || (size_t)n >= cap)
        return -1;
    size_t len = (size_t)n;
    time_t now = time(NULL);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (key_file(key, cap, &len, files[i], now))
            return -1;
    return 0;
}

static int client_ctx_new(sm_tls_ctx **out, const sm_tls_options *o)
{
    static char key[KEY_CAP]; /* client_lock, from keying to keeping */
    pthread_mutex_lock(&client_lock);
    int keyed = client_key(key, sizeof key, o) == 0;
    int same = keyed && client_ctx && strcmp(key, client_ctx_key) == 0;
    *out = same ? sm__tls_ctx_ref(client_ctx) : NULL;
    int rc = same ? 0 : ctx_make(out, o, 0);
    if (!rc && keyed && !same) {
        sm__tls_ctx_unref(client_ctx);
        client_ctx = sm__tls_ctx_ref(*out);
        memcpy(client_ctx_key, key, sizeof key);
    }
    pthread_mutex_unlock(&client_lock);
    return rc;
}

int sm__tls_ctx_new(sm_tls_ctx **out, const sm_tls_options *o, int server)
{
    return server ? ctx_make(out, o, 1) : client_ctx_new(out, o);
}

sm_tls_ctx *sm__tls_ctx_ref(sm_tls_ctx *ctx)
{
    if (ctx)
        atomic_fetch_add(&ctx->refs, 1);
    return ctx;
}

void sm__tls_ctx_unref(sm_tls_ctx *ctx)
{
    if (ctx && atomic_fetch_sub(&ctx->refs, 1) == 1) {
        SSL_CTX_free(ctx->ssl);
        free(ctx);
    }
}

int sm__tls_ctx_handshake_ms(const sm_tls_ctx *ctx)
{
    return ctx->handshake_ms;
}

/* A client checks the name it meant to reach: a host name against the
 * certificate's DNS names (and sends it as SNI), an address against its
 * IP addresses. */
static int set_peer_name(SSL *ssl, const char *name)
{
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1 ? 0 : SM_ETLS;
    if (SSL_set_tlsext_host_name(ssl, name) != 1 || SSL_set1_host(ssl, name) != 1)
        return SM_ETLS;
    return 0;
}

int sm__tls_new(sm_tls **out, sm_tls_ctx *ctx, int fd, const char *host)
{
    *out = NULL;
    sm_tls *t = calloc(1, sizeof *t);
    if (!t || !(t->ssl = SSL_new(ctx->ssl))) {
        free(t);
        return tls_error(SM_ENOMEM, "session");
    }
    pthread_mutex_init(&t->lock, NULL);
    const char *name = ctx->server_name[0] ? ctx->server_name : host;
    BIO *bio = quiet_bio(fd);
    if (bio)
        SSL_set_bio(t->ssl, bio, bio); /* the session owns it now */
    int rc = bio ? 0 : SM_ENOMEM;
    if (!rc && !ctx->server && name && name[0])
        rc = set_peer_name(t->ssl, name);
    if (rc) {
        sm__tls_free(t);
        return tls_error(rc, "session");
    }
    if (ctx->server)
        SSL_set_accept_state(t->ssl);
    else
        SSL_set_connect_state(t->ssl);
    *out = t;
    return 0;
}

void sm__tls_free(sm_tls *t)
{
    if (!t)
        return;
    /* close_notify, if the handshake got that far; never waits. */
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
    SSL_free(t->ssl);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* What an SSL call's result means: SM_EAGAIN (and which readiness to wait
 * for), end of stream (0), or an error with OpenSSL's reason. */
static int outcome(sm_tls *t, int ret, short *want, const char *what)
{
    int err = SSL_get_error(t->ssl, ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        *want = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        ERR_clear_error();
        return SM_EAGAIN;
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return 0;
    }
    if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        int e = errno;
        ERR_clear_error();
        return e ? -e : 0; /* EOF without close_notify: an end of stream */
    }
    long verify = SSL_get_verify_result(t->ssl);
    if (verify != X509_V_OK)
        return sm__error_set(SM_EVERIFY, "TLS %s: certificate verify failed: %s", what,
                             X509_verify_cert_error_string(verify));
    return tls_error(SM_ETLS, what);
}

int sm__tls_handshake(sm_tls *t, short *want)
{
    ERR_clear_error();
    int ret = SSL_do_handshake(t->ssl);
    if (ret == 1)
        return 0;
    int rc = outcome(t, ret, want, "handshake");
    return rc == 0 ? sm__error_set(SM_ETLS, "TLS handshake: the peer closed the connection") : rc;
}

int sm__tls_handshake_wait(sm_tls *t, int fd, int64_t deadline)
{
    short want = 0;
    int rc;
    while ((rc = sm__tls_handshake(t, &want)) == SM_EAGAIN) {
        int w = sm__wait(fd, want, deadline);
        if (w)
            return sm__error_set(w, "TLS handshake");
    }
    return rc;
}

ssize_t sm__tls_read(sm_tls *t, void *buf, size_t len, short *want)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    ERR_clear_error();
    int ret = SSL_read_ex(t->ssl, buf, len, &n);
    int rc = ret == 1 ? 0 : outcome(t, ret, want, "read");
    pthread_mutex_unlock(&t->lock);
    return ret == 1 ? (ssize_t)n : rc;
}

ssize_t sm__tls_write(sm_tls *t, const void *buf, size_t len, short *want)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    ERR_clear_error();
    int ret = SSL_write_ex(t->ssl, buf, len, &n);
    int rc = ret == 1 ? 0 : outcome(t, ret, want, "write");
    pthread_mutex_unlock(&t->lock);
    if (ret == 1)
        return (ssize_t)n;
    return rc == 0 ? -EPIPE : rc;
}

ssize_t sm__tls_read_wait(sm_tls *t, int fd, void *buf, size_t len, int64_t deadline)
{
    for (;;) {
        short want = 0;
        ssize_t n = sm__tls_read(t, buf, len, &want);
        if (n != SM_EAGAIN)
            return n;
        int rc = sm__wait(fd, want, deadline);
        if (rc)
            return rc;
    }
}

/* The most that one write gathers into one TLS record (its size limit). */
#define GATHER 16384

int sm__tls_write_all(sm_tls *t, int fd, struct iovec *iov, int iovcnt, int64_t deadline,
                      size_t *sent)
{
    *sent = 0;
    /* A small frame's header and payload go out as one record, not two:
     * the peer then reads a message with one read instead of two. */
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (iovcnt > 1 && total <= GATHER) {
        uint8_t one[GATHER];
        size_t at = 0;
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len)
                memcpy(one + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        struct iovec whole = { one, total };
        return sm__tls_write_all(t, fd, &whole, 1, deadline, sent);
    }
    for (int i = 0; i < iovcnt; i++) {
        size_t done = 0;
        while (done < iov[i].iov_len) {
            short want = 0;
            ssize_t n = sm__tls_write(t, (const char *)iov[i].iov_base + done,
                                      iov[i].iov_len - done, &want);
            if (n > 0) {
                done += (size_t)n;
                *sent += (size_t)n;
                continue;
            }
            int rc = n == SM_EAGAIN ? sm__wait(fd, want, deadline) : (int)n;
            if (rc)
                return rc;
        }
    }
    return 0;
}

int sm__tls_peer_subject(const sm_tls *t, char *buf, size_t len)
{
    X509 *cert = SSL_get0_peer_certificate(t->ssl);
    if (!cert || SSL_get_verify_result(t->ssl) != X509_V_OK)
        return sm__error_set(SM_EVERIFY, "TLS: the peer presented no verified certificate");
    char subject[512];
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    int n = snprintf(buf, len, "%s", subject);
    if (n < 0 || (size_t)n >= len)
        return sm__error_set(SM_EINVAL, "certificate subject: buffer of %zu bytes too small", len);
    return n;
}

#endif
