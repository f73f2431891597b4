/* The blocking API from the tests' side: listener/connection pairs,
 * clients that speak text, receiving by each call and checked round
 * trips.  All of it asserts. */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

const sm_options client_opts = { .connect_timeout_ms = WAIT_MS,
                                 .send_timeout_ms = WAIT_MS,
                                 .recv_timeout_ms = WAIT_MS };

/* The bound address is checked for form: its length is returned. */
void start_listener(const char *addr, const sm_options *o, sm_listener **l,
                    char where[SM_ADDRSTRLEN])
{
    int rc = sm_listen_opts(l, addr, o);
    cr_assert_eq(rc, 0, "sm_listen(%s) = %d: %s", addr, rc, sm_last_error());
    int n = sm_listener_addr(*l, where, SM_ADDRSTRLEN);
    cr_assert_gt(n, 0, "sm_listener_addr: %d %s", n, sm_last_error());
    cr_assert_eq((size_t)n, strlen(where), "returns the string's length");
}

void open_pair(const char *addr, const sm_options *o, sm_listener **l, sm_conn **server,
               sm_conn **client)
{
    char where[SM_ADDRSTRLEN];
    start_listener(addr, o, l, where);
    int rc = sm_connect_opts(client, where, o);
    cr_assert_eq(rc, 0, "sm_connect(%s) = %d: %s", where, rc, sm_last_error());
    rc = sm_accept(*l, server);
    cr_assert_eq(rc, 0, "sm_accept = %d: %s", rc, sm_last_error());
}

void close_pair(sm_listener *l, sm_conn *server, sm_conn *client)
{
    sm_close(server);
    sm_close(client);
    sm_listener_close(l);
}

int raw_pair(const char *addr, const sm_options *o, sm_listener **l, sm_conn **server)
{
    char where[SM_ADDRSTRLEN];
    start_listener(addr, o, l, where);
    int fd = raw_connect(where);
    cr_assert_geq(fd, 0, "raw connect to %s: %s", where, strerror(-fd));
    int rc = sm_accept(*l, server);
    cr_assert_eq(rc, 0, "sm_accept = %d: %s", rc, sm_last_error());
    return fd;
}

void closed_addr(const char *addr, char where[SM_ADDRSTRLEN])
{
    sm_listener *l;
    start_listener(addr, NULL, &l, where);
    sm_listener_close(l);
}

sm_conn *client_to(const char *addr)
{
    sm_conn *c = NULL;
    int rc = sm_connect_opts(&c, addr, &client_opts);
    cr_assert_eq(rc, 0, "connect to %s: %s", addr, sm_last_error());
    return c;
}

void send_text(sm_conn *c, const char *text)
{
    int rc = sm_send(c, text, strlen(text));
    cr_assert_eq(rc, 0, "send '%s': %s", text, sm_last_error());
}

void recv_text(sm_conn *c, char *buf, size_t cap)
{
    ssize_t n = sm_recv(c, buf, cap - 1);
    cr_assert(n >= 0, "receive: %s", sm_strerror((int)n));
    buf[n] = '\0';
}

void expect_text(sm_conn *c, const char *want)
{
    char buf[2048];
    recv_text(c, buf, sizeof buf);
    cr_assert_str_eq(buf, want, "received '%s', expected '%s'", buf, want);
}

void ask(sm_conn *c, const char *req, char *out, size_t cap)
{
    send_text(c, req);
    recv_text(c, out, cap);
}

void set_recv_timeout(sm_conn *c, int ms)
{
    sm_options o = client_opts;
    o.recv_timeout_ms = ms;
    cr_assert_eq(sm_conn_set_options(c, &o), 0);
}

void expect_silence(sm_conn *c, int ms)
{
    char buf[256];
    set_recv_timeout(c, ms);
    ssize_t n = sm_recv(c, buf, sizeof buf - 1);
    set_recv_timeout(c, WAIT_MS);
    if (n >= 0)
        buf[n] = '\0';
    cr_assert_eq(n, SM_ETIMEDOUT, "expected nothing, got %zd: %s", n,
                 n >= 0 ? buf : sm_strerror((int)n));
}

void expect_eof(sm_conn *c)
{
    char buf[256];
    ssize_t n = sm_recv(c, buf, sizeof buf);
    cr_assert_eq(n, SM_ECLOSED, "expected end of stream, got %zd (%s)", n,
                 n >= 0 ? "a message" : sm_strerror((int)n));
}

void local_addr_of(sm_conn *c, char *buf, size_t cap)
{
    struct sockaddr_in in;
    socklen_t len = sizeof in;
    cr_assert_eq(getsockname(sm_conn_fd(c), (struct sockaddr *)&in, &len), 0);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &in.sin_addr, ip, sizeof ip);
    snprintf(buf, cap, "%s:%u", ip, ntohs(in.sin_port));
}

const char *const recv_call_name[] = { "sm_recv", "sm_recv_alloc", "sm_recv_view" };

ssize_t recv_by(sm_conn *c, enum recv_call call, void *out, size_t cap)
{
    if (call == BY_RECV)
        return sm_recv(c, out, cap);
    void *alloc = (void *)1;
    const void *view = (void *)1;
    ssize_t n = call == BY_ALLOC ? sm_recv_alloc(c, &alloc) : sm_recv_view(c, &view);
    const void *msg = call == BY_ALLOC ? alloc : view;
    if (n < 0) {
        cr_assert_null(msg, "%s: no message, yet *msg is set", recv_call_name[call]);
        return n;
    }
    if ((size_t)n <= cap)
        memcpy(out, msg, (size_t)n);
    if (call == BY_ALLOC)
        free(alloc);
    return n;
}

/* trip's sender: one sm_send, on a thread of its own. */
struct trip_send {
    sm_conn *c;
    const void *msg;
    size_t len;
    int rc;
};

static void *trip_send_run(void *arg)
{
    struct trip_send *t = arg;
    t->rc = sm_send(t->c, t->msg, t->len);
    return NULL;
}

void trip(sm_conn *from, sm_conn *to, size_t len, int alloc, unsigned seed, const char *what)
{
    uint8_t *msg = patterned(len, seed);
    struct trip_send job = { from, msg, len, 1 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, trip_send_run, &job), 0);
    uint8_t *got = NULL;
    void *heap = NULL;
    ssize_t n;
    if (!alloc) {
        /* Exactly len bytes: ASan catches a single byte written past it. */
        got = malloc(len ? len : 1);
        cr_assert_not_null(got);
        n = sm_recv(to, got, len);
    } else {
        n = sm_recv_alloc(to, &heap);
        got = heap;
    }
    const char *call = recv_call_name[alloc ? BY_ALLOC : BY_RECV];
    cr_assert_eq(n, (ssize_t)len, "%s: %zu bytes via %s: got %zd (%s)", what, len, call, n,
                 sm_last_error());
    cr_assert_not_null(got, "%s: sm_recv_alloc gives a block even for 0 bytes", what);
    pthread_join(t, NULL);
    cr_assert_eq(job.rc, 0, "%s: sm_send(%zu) = %d %s", what, len, job.rc, sm_strerror(job.rc));
    size_t bad = pattern_check(got, len, seed);
    cr_assert_eq(bad, len, "%s: %zu bytes via %s differ at offset %zu", what, len, call, bad);
    free(got);
    free(msg);
}

/* ---- a shared test body ---- */

enum { FLOOD_LEN = 256 * 1024, FLOOD_COUNT = 32, KERNEL_BUFFER = 64 * 1024, CHUNK = 8192 };

struct flood {
    sm_conn *c;
    int rc;      /* first library error */
    int got;     /* messages read back after the flood */
    int held_ok; /* the last of them was the held "held" */
};

/* The peer: sends more than the kernel buffers hold, and only then reads
 * what came the other way, answering "done" after `expect` messages. */
static void *flood_then_read(void *arg)
{
    struct flood *f = arg;
    uint8_t *big = patterned(FLOOD_LEN, 3);
    for (int i = 0; i < FLOOD_COUNT && !f->rc; i++)
        f->rc = sm_send(f->c, big, FLOOD_LEN);
    free(big);
    for (void *m = NULL; !f->rc; free(m)) {
        ssize_t n = sm_recv_alloc(f->c, &m);
        if (n < 0) {
            f->rc = (int)n;
            break;
        }
        f->got++;
        if (n == 4 && memcmp(m, "held", 4) == 0) {
            f->held_ok = 1;
            f->rc = sm_send(f->c, "done", 4);
            free(m);
            break;
        }
    }
    return NULL;
}

/* Small kernel buffers (no autotuning) so the flood surely outgrows them. */
static void shrink_buffers(sm_conn *c)
{
    int size = KERNEL_BUFFER, fd = sm_conn_fd(c);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

void held_frames_never_block_receiving(sm_conn *c, sm_conn *peer)
{
    sm_options quick = { .send_timeout_ms = 300, .recv_timeout_ms = 5000 };
    sm_conn_set_options(c, &quick);
    sm_options patient = { .send_timeout_ms = 5000, .recv_timeout_ms = 5000 };
    sm_conn_set_options(peer, &patient);
    shrink_buffers(c);
    shrink_buffers(peer);
    struct flood f = { peer, 0, 0, 0 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, flood_then_read, &f), 0);

    /* Fill our direction until the kernel takes no more (bounded).  The
     * rest of a chunk a timeout cut stays held, and leaves room for more. */
    uint8_t *chunk = patterned(CHUNK, 5);
    int sent = 0, rc = 0;
    while (sent < 4000 && (rc = sm_send(c, chunk, CHUNK)) == 0)
        sent++;
    cr_assert_eq(rc, SM_ETIMEDOUT, "our direction fills up: %s", sm_strerror(rc));
    cr_assert_eq(sm_send_flags(c, "held", 4, SM_MORE), 0, "%s", sm_last_error());

    int flooded = 0;
    for (; flooded < FLOOD_COUNT; flooded++) {
        void *m;
        ssize_t n = sm_recv_alloc(c, &m);
        cr_assert_eq(n, FLOOD_LEN, "message %d of the flood, held frames waiting: %s", flooded,
                     n < 0 ? sm_last_error() : "wrong length");
        cr_assert_eq(pattern_check(m, FLOOD_LEN, 3), FLOOD_LEN, "message %d intact", flooded);
        free(m);
    }
    char done[8];
    ssize_t n = sm_recv(c, done, sizeof done);
    pthread_join(t, NULL);
    cr_assert_eq(n, 4, "the peer's answer once it had our held frame: %s",
                 n < 0 ? sm_last_error() : "wrong length");
    cr_assert_eq(memcmp(done, "done", 4), 0);
    cr_assert_eq(f.rc, 0, "peer: %s", sm_strerror(f.rc));
    cr_assert(f.held_ok, "the held frame arrived last");
    cr_assert_eq(f.got, sent + 1, "every message we sent arrived (%d of %d)", f.got, sent + 1);
    free(chunk);
}
