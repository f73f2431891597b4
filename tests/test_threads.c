/*
 * Threads on one connection: several threads calling sm_send at once must
 * never interleave frames on the wire, and one thread may send while
 * another receives.  Also run under ThreadSanitizer (`make check
 * SANITIZE=thread CHECK_FILTER=...`, the threads suite), where this file is built
 * against the stand-in in tests/tsan: assertions only on the test's own
 * thread, after every helper thread has been joined.
 */
#include "support/support.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Concurrent senders                                                  */
/* ------------------------------------------------------------------ */

#define SENDERS 4
#define MAX_LEN (256u * 1024u)

/*
 * Message `seq` of sender `id`.  Every byte carries the sender in its top
 * two bits, so a single byte of another sender's frame spliced in is seen
 * wherever it lands; the first two bytes carry the sequence number, and
 * the rest depend on (id, seq, offset), so a frame from the same sender
 * out of place or shifted fails too.  Lengths vary from a few bytes to
 * 256 KiB: far beyond the socket buffers, so without the library's send
 * lock the kernel would take each blocked sendmsg in pieces and let the
 * other threads' bytes in between.
 */
static size_t msg_len(unsigned id, unsigned seq)
{
    if (seq % 8 == 3)
        return 2 + (seq * 13 + id * 5) % 300; /* some small ones */
    return 2 + (size_t)((seq * 104729u + id * 7919u + 4096u) % (MAX_LEN - 1));
}

static uint8_t msg_byte(unsigned id, unsigned seq, size_t i)
{
    uint8_t low;
    if (i == 0)
        low = (uint8_t)(seq & 63);
    else if (i == 1)
        low = (uint8_t)((seq >> 6) & 63);
    else
        low = (uint8_t)((seq * 7u + id * 11u + (unsigned)i + (unsigned)(i >> 9)) & 63);
    return (uint8_t)((id << 6) | low);
}

static void msg_fill(uint8_t *p, unsigned id, unsigned seq)
{
    size_t len = msg_len(id, seq);
    for (size_t i = 0; i < len; i++)
        p[i] = msg_byte(id, seq, i);
}

struct sender {
    sm_conn *c;
    unsigned id;
    unsigned count;
    unsigned sent;
    int rc;
};

static void *sender_run(void *arg)
{
    struct sender *s = arg;
    uint8_t *buf = malloc(MAX_LEN + 2);
    s->rc = buf ? 0 : SM_ENOMEM;
    for (unsigned seq = 0; seq < s->count && s->rc == 0; seq++) {
        msg_fill(buf, s->id, seq);
        s->rc = sm_send(s->c, buf, msg_len(s->id, seq));
        if (s->rc == 0)
            s->sent++;
    }
    free(buf);
    return NULL;
}

/* Checks one received message; returns 0 or writes why into err. */
static int check_msg(const uint8_t *p, ssize_t n, unsigned next[SENDERS], char *err, size_t errlen)
{
    if (n < 2) {
        snprintf(err, errlen, "receive returned %zd (%s): %s", n, sm_strerror((int)n),
                 sm_last_error());
        return -1;
    }
    unsigned id = p[0] >> 6;
    unsigned seq = (unsigned)(p[0] & 63) | (unsigned)(p[1] & 63) << 6;
    if (id >= SENDERS || (p[1] >> 6) != id) {
        snprintf(err, errlen, "first bytes %02x %02x name no sender", p[0], p[1]);
        return -1;
    }
    if (seq != next[id]) {
        snprintf(err, errlen, "sender %u: got seq %u, expected %u", id, seq, next[id]);
        return -1;
    }
    if ((size_t)n != msg_len(id, seq)) {
        snprintf(err, errlen, "sender %u seq %u: %zd bytes, sent %zu", id, seq, n,
                 msg_len(id, seq));
        return -1;
    }
    for (size_t i = 0; i < (size_t)n; i++) {
        if (p[i] != msg_byte(id, seq, i)) {
            snprintf(err, errlen,
                     "sender %u seq %u (%zd bytes): byte %zu is %02x, expected %02x "
                     "(its top bits say sender %u)",
                     id, seq, n, i, p[i], msg_byte(id, seq, i), (unsigned)(p[i] >> 6));
            return -1;
        }
    }
    next[id]++;
    return 0;
}

static void concurrent_senders(const char *addr, unsigned per_sender)
{
    sm_listener *l;
    sm_conn *rx, *tx;
    /* Every wait is bounded, so a broken library fails instead of hanging. */
    sm_options o = { .recv_timeout_ms = 15000, .send_timeout_ms = 15000 };
    open_pair(addr, &o, &l, &rx, &tx);

    pthread_t t[SENDERS];
    struct sender s[SENDERS];
    for (unsigned i = 0; i < SENDERS; i++) {
        s[i] = (struct sender){ tx, i, per_sender, 0, 0 };
        cr_assert_eq(pthread_create(&t[i], NULL, sender_run, &s[i]), 0);
    }

    /* Receive here, alternating sm_recv and sm_recv_alloc. */
    unsigned next[SENDERS] = { 0 };
    unsigned total = SENDERS * per_sender, got = 0;
    char err[256] = "";
    uint8_t *buf = malloc(MAX_LEN + 2);
    int64_t end = now_ms() + 50000;
    while (got < total && buf && now_ms() < end) {
        ssize_t n;
        if (got % 2 == 0) {
            n = sm_recv(rx, buf, MAX_LEN + 2);
            if (check_msg(buf, n, next, err, sizeof err))
                break;
        } else {
            void *m = NULL;
            n = sm_recv_alloc(rx, &m);
            int bad = check_msg(m, n, next, err, sizeof err);
            free(m);
            if (bad)
                break;
        }
        got++;
    }
    /* Nothing more than what was sent. */
    ssize_t extra = 0;
    if (got == total) {
        sm_options quick = { .recv_timeout_ms = 200 };
        sm_conn_set_options(rx, &quick);
        extra = sm_recv(rx, buf, MAX_LEN + 2);
    }
    /* On failure, closing the receiving end lets blocked senders fail out. */
    sm_close(rx);
    for (unsigned i = 0; i < SENDERS; i++)
        pthread_join(t[i], NULL);
    free(buf);
    sm_close(tx);
    sm_listener_close(l);

    cr_assert_str_eq(err, "", "%s: frames were mixed up: %s", addr, err);
    cr_assert_eq(got, total, "%s: received %u of %u messages", addr, got, total);
    cr_assert_eq(extra, SM_ETIMEDOUT, "%s: an extra message or error after the last: %zd", addr,
                 extra);
    for (unsigned i = 0; i < SENDERS; i++) {
        cr_assert_eq(s[i].rc, 0, "%s: sender %u: %s", addr, i, sm_strerror(s[i].rc));
        cr_assert_eq(s[i].sent, per_sender, "%s: sender %u", addr, i);
        cr_assert_eq(next[i], per_sender, "%s: sender %u's messages all arrived", addr, i);
    }
}

Test(threads, four_senders_on_one_tcp_connection_never_interleave, .timeout = 90)
{
    concurrent_senders("127.0.0.1:0", 200);
}

Test(threads, four_senders_on_one_unix_connection_never_interleave, .timeout = 90)
{
    char addr[128];
    unix_addr(addr, sizeof addr, "senders");
    concurrent_senders(addr, 100);
}

/* ------------------------------------------------------------------ */
/* Full duplex                                                         */
/* ------------------------------------------------------------------ */

#define DUPLEX_COUNT 1000u

/* Sizes from 0 up, every tenth one larger than SM_RECV_BUFFER. */
static size_t duplex_len(unsigned i)
{
    if (i % 10 == 7)
        return SM_RECV_BUFFER + 1 + (i * 7919u) % 40000u;
    return (i * 104729u) % 20000u;
}

struct duplex {
    sm_conn *c;
    int flags;     /* SM_MORE: batched sends and zero-copy receives */
    unsigned done; /* messages handled */
    int rc;        /* first library error */
    char err[200]; /* first content error */
};

/* Sends message 0, 1, ... on c. */
static void *duplex_send(void *arg)
{
    struct duplex *d = arg;
    uint8_t *buf = malloc(SM_RECV_BUFFER + 40001);
    if (!buf) {
        d->rc = SM_ENOMEM;
        return NULL;
    }
    for (unsigned i = 0; i < DUPLEX_COUNT && d->rc == 0; i++) {
        size_t len = duplex_len(i);
        pattern_fill(buf, len, i);
        /* Every 16th and the last go out at once; the receiving thread's
         * calls flush the others in between. */
        int more = i % 16 != 15 && i != DUPLEX_COUNT - 1;
        d->rc = sm_send_flags(d->c, buf, len, more ? d->flags : 0);
        if (d->rc == 0)
            d->done++;
    }
    free(buf);
    return NULL;
}

/* Receives the echoes on the same connection, checking each. */
static void *duplex_recv(void *arg)
{
    struct duplex *d = arg;
    size_t cap = SM_RECV_BUFFER + 40001;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        d->rc = SM_ENOMEM;
        return NULL;
    }
    for (unsigned i = 0; i < DUPLEX_COUNT && d->rc == 0 && !d->err[0]; i++) {
        const uint8_t *msg = buf;
        const void *view;
        ssize_t n = d->flags ? sm_recv_view(d->c, &view) : sm_recv(d->c, buf, cap);
        if (d->flags)
            msg = view;
        if (n < 0) {
            d->rc = (int)n;
            snprintf(d->err, sizeof d->err, "echo %u: %s", i, sm_last_error());
            break;
        }
        if ((size_t)n != duplex_len(i)) {
            snprintf(d->err, sizeof d->err, "echo %u: %zd bytes, sent %zu", i, n, duplex_len(i));
            break;
        }
        size_t bad = pattern_check(msg, (size_t)n, i);
        if (bad < (size_t)n) {
            snprintf(d->err, sizeof d->err, "echo %u: byte %zu differs", i, bad);
            break;
        }
        d->done++;
    }
    free(buf);
    return NULL;
}

/* The peer: sends back every message it receives. */
static void *duplex_echo(void *arg)
{
    struct duplex *d = arg;
    for (unsigned i = 0; i < DUPLEX_COUNT && d->rc == 0; i++) {
        void *m = NULL;
        const void *view;
        ssize_t n = d->flags ? sm_recv_view(d->c, &view) : sm_recv_alloc(d->c, &m);
        if (n < 0) {
            d->rc = (int)n;
            break;
        }
        /* A view stays valid until the next receive: this send is fine, and
         * with SM_MORE that next receive writes the echo. */
        int last = i == DUPLEX_COUNT - 1;
        d->rc = sm_send_flags(d->c, d->flags ? view : m, (size_t)n, last ? 0 : d->flags);
        free(m);
        if (d->rc == 0)
            d->done++;
    }
    return NULL;
}

static void full_duplex(const char *addr, int flags)
{
    sm_listener *l;
    sm_conn *peer, *mine;
    sm_options o = { .recv_timeout_ms = 10000, .send_timeout_ms = 10000 };
    open_pair(addr, &o, &l, &peer, &mine);
    struct duplex echo = { peer, flags, 0, 0, "" }, tx = { mine, flags, 0, 0, "" },
                  rx = { mine, flags, 0, 0, "" };
    pthread_t te, ts, tr;
    cr_assert_eq(pthread_create(&te, NULL, duplex_echo, &echo), 0);
    cr_assert_eq(pthread_create(&tr, NULL, duplex_recv, &rx), 0);
    cr_assert_eq(pthread_create(&ts, NULL, duplex_send, &tx), 0);
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    /* If the receiver gave up, the echo may be blocked: closing our end
     * makes it fail instead of waiting out its timeout. */
    if (rx.done != DUPLEX_COUNT) {
        sm_close(mine);
        mine = NULL;
    }
    pthread_join(te, NULL);

    ssize_t extra = SM_ETIMEDOUT;
    if (mine) {
        sm_options quick = { .recv_timeout_ms = 200 };
        uint8_t b[8];
        sm_conn_set_options(mine, &quick);
        extra = sm_recv(mine, b, sizeof b);
    }
    sm_close(mine);
    sm_close(peer);
    sm_listener_close(l);

    cr_assert_eq(tx.rc, 0, "%s: sender: %s", addr, sm_strerror(tx.rc));
    cr_assert_eq(tx.done, DUPLEX_COUNT, "%s: sent %u", addr, tx.done);
    cr_assert_str_eq(rx.err, "", "%s: receiver: %s", addr, rx.err);
    cr_assert_eq(rx.done, DUPLEX_COUNT, "%s: received %u echoes", addr, rx.done);
    cr_assert_eq(echo.rc, 0, "%s: echo peer: %s", addr, sm_strerror(echo.rc));
    cr_assert_eq(echo.done, DUPLEX_COUNT, "%s: echoed %u", addr, echo.done);
    cr_assert_eq(extra, SM_ETIMEDOUT, "%s: nothing beyond the echoes: %zd", addr, extra);
}

Test(threads, send_and_receive_at_once_tcp, .timeout = 60)
{
    full_duplex("127.0.0.1:0", 0);
}

Test(threads, batched_send_and_view_receive_at_once_tcp, .timeout = 60)
{
    full_duplex("127.0.0.1:0", SM_MORE);
}

Test(threads, send_and_receive_at_once_unix, .timeout = 60)
{
    char addr[128];
    unix_addr(addr, sizeof addr, "duplex");
    full_duplex(addr, 0);
}
