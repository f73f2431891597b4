#include "server.h"

#include "addr.h"
#include "backoff.h"
#include "bind.h"
#include "error.h"
#include "frame.h"
#include "poller.h"
#include "sock.h"
#include "timer.h"
#include "tls.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCRATCH_LEN (64u * 1024u)
#define EVENT_BATCH 256
#define ACCEPT_BATCH 64
#define ACCEPT_RETRY_MS 100
#define STALL_CHECK_MS 1000
/* Freed this much since the last trim, the server gives memory back. */
#define TRIM_BYTES ((size_t)32 * 1024 * 1024)

/* Why a client is not read from (besides the memory budget): its replies
 * back up past high_water, or the application paused it. */
#define PAUSED_OUTPUT 1u
#define PAUSED_BY_USER 2u
/* What a queued sm_server_call costs against max_posted. */
#define CALL_COST 64

/* An id is (sequence << 24 | fd): the fd finds the client in O(1), the
 * process-wide sequence makes the id unique.  Listener keys use bit 63,
 * which a sequence never reaches. */
#define ID_FD_BITS 24
#define ID_FD_MASK ((UINT64_C(1) << ID_FD_BITS) - 1)
#define LISTENER_KEY (UINT64_C(1) << 63)
/* A dialled link's id has this bit, and its low bits index s->links: its
 * fd changes with every reconnect, its id never does. */
#define DIAL_KEY (UINT64_C(1) << 62)
/* A dialled connect that has not completed by then is given up. */
#define DIAL_CONNECT_MS 10000

enum client_state {
    OPEN,
    DRAINING,   /* send what is queued, then close with close_reason */
    CLOSING,    /* inside on_close: nothing may be queued any more */
    DOWN,       /* a dialled link waiting to connect again; no fd */
    CONNECTING, /* a dialled link whose connect is in progress */
    HANDSHAKE   /* a TLS client before its handshake is done: no on_open yet */
};

/* What a dialled link keeps across reconnects. */
struct dial {
    sm_addr addr;
    char text[SM_ADDRSTRLEN]; /* as given, for errors */
    sm_backoff backoff;
    uint64_t retry_timer;  /* the pending retry, or 0 */
    uint64_t attempt;      /* counts attempts: stale resolutions are dropped */
    int64_t connect_until; /* CONNECTING gives up at this time */
    size_t max_queue;
    size_t frame_left; /* bytes of the frame being written not yet out */
    int gone;          /* the application disconnected it: no more retries */
};

struct client {
    sm_conn_id id;
    int fd;
    enum client_state state;
    int close_reason;
    unsigned interest;      /* events registered with the poller */
    unsigned paused;        /* PAUSED_OUTPUT, PAUSED_BY_USER */
    int dirty;              /* id is in server->dirty */
    int64_t last_input;     /* ms; the idle timeout counts from here */
    int64_t last_output;    /* ms; the peer last took queued bytes */
    int64_t drain_deadline; /* ms; DRAINING ends here at the latest */
    size_t holding;         /* bytes of partial frame and output queue */
    struct post *posted;    /* posts waiting for room in the queue */
    struct post **posted_tail;
    struct client *older, *newer; /* every client, by last input */
    void *data;
    uint8_t *out; /* queued frames are out[out_pos, out_len); NULL when none */
    size_t out_pos, out_len, out_cap;
    sm_decoder decoder;
    struct dial *dial; /* NULL for an accepted client */
    int family;
    sm_tls *tls;             /* TLS session, or NULL */
    int64_t handshake_until; /* HANDSHAKE ends here at the latest */
};

/* A message from sm_server_post, or (with call set) an sm_server_call. */
struct post {
    struct post *next;
    sm_conn_id id;
    sm_call_fn *call;
    void *call_arg;
    size_t len;
    uint8_t msg[];
};

struct sm_server {
    sm_server_handlers handlers;
    void *arg;
    sm_server_options opt;
    sm_poller *poller;
    sm_bound *listeners;
    sm_tls_ctx **listener_tls; /* each listener's TLS, or NULL */
    int listener_count;
    int accept_paused;
    int64_t accept_retry_at;
    struct client **by_fd;
    size_t by_fd_len;
    struct client **links; /* dialled links, by the slot in their id */
    size_t links_len;
    size_t connecting;         /* links in CONNECTING */
    size_t handshaking;        /* clients in HANDSHAKE */
    struct resolve *resolving; /* name lookups running on their threads */
    int closing_all;           /* links are freed, not dialled again */
    struct client *oldest, *newest;
    sm_conn_id *dirty; /* clients with output to flush this iteration */
    size_t dirty_len, dirty_cap;
    struct client *feeding;  /* client whose messages are being delivered */
    size_t buffered;         /* every client's holding, summed */
    size_t buffered_peak;    /* the most buffered since memory was trimmed */
    int budget_paused;       /* some client is not read for the budget */
    struct client *finisher; /* over the budget, the one client still read
                              * to finish its large frame */
    int64_t stall_check_at;
    sm_timers timers;
    uint64_t next_timer_id;
    uint64_t firing;      /* the timer whose callback runs now... */
    int firing_cancelled; /* ...and whether it cancelled itself */
    atomic_int stop_requested;
    pthread_mutex_t post_lock;
    struct post *posts, **posts_tail;
    size_t posted_bytes; /* post_lock; posts not yet in an output queue */
    sm_server_stats stats;
    uint8_t scratch[SCRATCH_LEN]; /* every read lands here first */
};

/* The sequence is process-wide so ids never repeat across servers either. */
static atomic_uint_fast64_t next_sequence = 1;

static struct client *lookup(const sm_server *s, sm_conn_id id)
{
    uint64_t slot = id & ID_FD_MASK;
    struct client *c;
    if (id & DIAL_KEY)
        c = slot < s->links_len ? s->links[slot] : NULL;
    else
        c = slot < s->by_fd_len ? s->by_fd[slot] : NULL;
    return c && c->id == id ? c : NULL;
}

/* The open client with this id, or NULL with sm_last_error() set. */
static struct client *find_open(const sm_server *s, sm_conn_id id)
{
    struct client *c = s ? lookup(s, id) : NULL;
    if (c && c->state == OPEN)
        return c;
    sm__error_set(SM_ENOCONN, "connection %llu", (unsigned long long)id);
    return NULL;
}

/* An open client, or a dialled link not up: sends to it are queued. */
static struct client *find_sendable(const sm_server *s, sm_conn_id id)
{
    struct client *c = s ? lookup(s, id) : NULL;
    if (c && (c->state == OPEN ||
              (c->dial && !c->dial->gone && (c->state == DOWN || c->state == CONNECTING))))
        return c;
    sm__error_set(SM_ENOCONN, "connection %llu", (unsigned long long)id);
    return NULL;
}

static size_t queued(const struct client *c)
{
    return c->out_len - c->out_pos;
}

/* What the partial frame costs (its buffer), and how much of it is still
 * to come (unknown while the header itself is partial). */
static size_t decoder_held(const sm_decoder *d)
{
    return d->codec.cap;
}

static uint32_t decoder_missing(const sm_decoder *d)
{
    const sm_frame_decoder *f = &d->codec;
    return f->header_have == SM_HEADER_LEN ? f->len - f->have : UINT32_MAX - 1;
}

/* A post costs its frame against max_posted, so even empty ones add up. */
static size_t post_cost(const struct post *p)
{
    return p->call ? CALL_COST : SM_HEADER_LEN + p->len;
}

static int over_budget(const sm_server *s)
{
    return s->buffered > s->opt.max_buffered;
}

/* Brings the server's total up to date after c's buffers changed. */
static void account(sm_server *s, struct client *c)
{
    size_t now = decoder_held(&c->decoder) + c->out_cap;
    s->buffered = s->buffered - c->holding + now;
    c->holding = now;
}

/* Whether to read from c now.  Not while its replies back up; and while
 * the server is over its memory budget, only if c holds little (small
 * messages keep flowing for everyone) or is the finisher (large frames
 * still complete, one at a time). */
static int may_read(const sm_server *s, const struct client *c)
{
    if (c->state != OPEN || c->paused)
        return 0;
    return !over_budget(s) || c->holding <= SCRATCH_LEN || c == s->finisher;
}

/* ---- the activity list: oldest input first, for the idle timeout ---- */

static void list_remove(sm_server *s, struct client *c)
{
    *(c->older ? &c->older->newer : &s->oldest) = c->newer;
    *(c->newer ? &c->newer->older : &s->newest) = c->older;
    c->older = c->newer = NULL;
}

static void list_append(sm_server *s, struct client *c)
{
    c->older = s->newest;
    *(s->newest ? &s->newest->newer : &s->oldest) = c;
    s->newest = c;
}

static void touch(sm_server *s, struct client *c)
{
    c->last_input = sm__now_ms();
    if (s->newest != c) {
        list_remove(s, c);
        list_append(s, c);
    }
}

/* ---- accepting ---- */

static void set_accepting(sm_server *s, int on)
{
    for (int i = 0; i < s->listener_count; i++)
        sm__poller_mod(s->poller, s->listeners[i].fd, LISTENER_KEY | (uint64_t)i,
                       on ? SM_POLL_IN : 0);
    s->accept_paused = !on;
    if (!on) {
        s->accept_retry_at = sm__now_ms() + ACCEPT_RETRY_MS;
        s->stats.accept_pauses++;
    }
}

static void update_interest(sm_server *s, struct client *c)
{
    if (c->state == DOWN || c->state == HANDSHAKE)
        return; /* no descriptor; or the handshake says what it waits for */
    /* HUP even while paused: a peer that leaves must be noticed. */
    /* A dirty client is written at the end of this iteration anyway: ask
     * for writability only if that leaves something (two epoll_ctl calls
     * per reply saved). */
    unsigned want = (may_read(s, c) ? SM_POLL_IN : 0) | (queued(c) && !c->dirty ? SM_POLL_OUT : 0) |
                    (c->state == OPEN ? SM_POLL_HUP : 0);
    if (c->state == CONNECTING)
        want = SM_POLL_OUT; /* writable: the connect is done, one way or the other */
    if (want != c->interest && sm__poller_mod(s->poller, c->fd, c->id, want) == 0)
        c->interest = want;
    if (c->state == OPEN && !c->paused && !(want & SM_POLL_IN))
        s->budget_paused = 1; /* apply_budget resumes it */
}

/* Frees posts that will never be queued, and returns their bytes to the
 * post budget. */
static void drop_posts(sm_server *s, struct post *p)
{
    size_t bytes = 0;
    while (p) {
        struct post *next = p->next;
        bytes += post_cost(p);
        free(p);
        p = next;
    }
    pthread_mutex_lock(&s->post_lock);
    s->posted_bytes -= bytes;
    pthread_mutex_unlock(&s->post_lock);
}

static void link_down(sm_server *s, struct client *c);
static void link_free(sm_server *s, struct client *c);
static void attempt_failed(sm_server *s, struct client *c, int reason);
static void connect_done(sm_server *s, struct client *c);
static void mark_dirty(sm_server *s, struct client *c);

/* The connection is over: on_close, then its descriptor goes.  A dialled
 * link the application still wants goes down and is dialled again;
 * anything else is freed. */
static void client_free(sm_server *s, struct client *c, int reason)
{
    c->state = CLOSING;
    if (s->handlers.on_close)
        s->handlers.on_close(s, c->id, reason, s->arg);
    sm__poller_del(s->poller, c->fd);
    sm__tls_free(c->tls);
    c->tls = NULL;
    close(c->fd);
    if (!c->dial)
        s->by_fd[c->fd] = NULL;
    c->fd = -1;
    list_remove(s, c);
    if (s->finisher == c)
        s->finisher = NULL;
    s->stats.conns--;
    /* A descriptor is free again: accepting may work now. */
    if (s->accept_paused)
        set_accepting(s, 1);
    if (c->dial && !c->dial->gone && !s->closing_all) {
        link_down(s, c);
        return;
    }
    if (c->dial) {
        link_free(s, c);
        return;
    }
    s->buffered -= c->holding;
    drop_posts(s, c->posted);
    sm__decoder_free(&c->decoder);
    free(c->out);
    free(c);
}

static int grow_table(sm_server *s, int fd)
{
    size_t len = s->by_fd_len ? s->by_fd_len : 64;
    while (len <= (size_t)fd)
        len *= 2;
    struct client **t = realloc(s->by_fd, len * sizeof(struct client *));
    if (!t)
        return SM_ENOMEM;
    memset(t + s->by_fd_len, 0, (len - s->by_fd_len) * sizeof(struct client *));
    s->by_fd = t;
    s->by_fd_len = len;
    return 0;
}

/* Registers fd as a new client; NULL on failure (fd still the caller's). */
static void handshake_step(sm_server *s, struct client *c);

/* Registers fd as a new client; NULL on failure (fd still the caller's).
 * With tls (a TLS listener's), it first does the handshake: on_open comes
 * when that is done. */
static struct client *client_open(sm_server *s, int fd, int family, sm_tls_ctx *tls)
{
    struct client *c = NULL;
    if ((uint64_t)fd > ID_FD_MASK || ((size_t)fd >= s->by_fd_len && grow_table(s, fd)) ||
        !(c = calloc(1, sizeof *c)))
        return NULL;
    c->fd = fd;
    c->id = (sm_conn_id)(atomic_fetch_add(&next_sequence, 1) << ID_FD_BITS) | (uint64_t)fd;
    c->interest = SM_POLL_IN | SM_POLL_HUP;
    c->posted_tail = &c->posted;
    if (sm__poller_add(s->poller, fd, c->id, c->interest)) {
        free(c);
        return NULL;
    }
    if (tls && sm__tls_new(&c->tls, tls, fd, NULL)) {
        sm__poller_del(s->poller, fd);
        free(c);
        return NULL;
    }
    sm__sock_set_nodelay(fd, family, s->opt.nagle);
    sm__decoder_init(&c->decoder, s->opt.max_frame);
    c->last_input = sm__now_ms();
    s->by_fd[fd] = c;
    list_append(s, c);
    s->stats.conns++;
    if (tls) {
        c->state = HANDSHAKE;
        c->handshake_until = c->last_input + sm__tls_ctx_handshake_ms(tls);
        s->handshaking++;
        return c;
    }
    if (s->handlers.on_open)
        s->handlers.on_open(s, c->id, s->arg);
    return c;
}

/* A TLS client that never finished its handshake leaves quietly: it was
 * never open, so it gets no on_close either. */
static void handshake_failed(sm_server *s, struct client *c)
{
    s->handshaking--;
    s->stats.tls_failed++;
    c->state = CLOSING;
    sm__poller_del(s->poller, c->fd);
    sm__tls_free(c->tls);
    close(c->fd);
    s->by_fd[c->fd] = NULL;
    list_remove(s, c);
    s->stats.conns--;
    s->buffered -= c->holding;
    drop_posts(s, c->posted);
    sm__decoder_free(&c->decoder);
    free(c->out);
    free(c);
}

/* One step of a client's TLS handshake, on its socket's readiness. */
static void handshake_step(sm_server *s, struct client *c)
{
    short want = 0;
    int rc = sm__tls_handshake(c->tls, &want);
    if (rc == SM_EAGAIN) {
        unsigned w = want == POLLIN ? SM_POLL_IN : SM_POLL_OUT;
        if (w != c->interest && sm__poller_mod(s->poller, c->fd, c->id, w) == 0)
            c->interest = w;
        return;
    }
    if (rc) {
        handshake_failed(s, c);
        return;
    }
    s->handshaking--;
    c->state = OPEN;
    touch(s, c);
    update_interest(s, c);
    if (s->handlers.on_open)
        s->handlers.on_open(s, c->id, s->arg);
}

SM_API int sm_server_adopt(sm_server *s, int fd, sm_conn_id *id)
{
    if (!s || fd < 0)
        return sm__error_set(SM_EINVAL, "sm_server_adopt: NULL server or negative fd");
    int family;
    int rc = sm__sock_adopt(fd, 0, &family);
    if (rc)
        return sm__error_set(rc, "sm_server_adopt: fd %d", fd);
    struct client *c = client_open(s, fd, family, NULL);
    if (!c)
        return sm__error_set(SM_ENOMEM, "sm_server_adopt: fd %d", fd);
    if (id)
        *id = c->id;
    return 0;
}

static void accept_clients(sm_server *s, int index)
{
    const sm_bound *l = &s->listeners[index];
    for (int i = 0; i < ACCEPT_BATCH && !s->accept_paused; i++) {
        int fd = sm__sock_accept(l->fd, SOCK_NONBLOCK);
        if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
            /* Out of descriptors: the client stays in the backlog, and a
             * level-triggered listener would wake us at once, forever. */
            set_accepting(s, 0);
            return;
        }
        if (fd < 0)
            return;
        s->stats.accepted++;
        if (s->opt.max_conns && s->stats.conns >= (size_t)s->opt.max_conns) {
            close(fd);
            s->stats.rejected++;
            continue;
        }
        if (!client_open(s, fd, l->family, s->listener_tls[index]))
            close(fd);
    }
}

/* ---- output ---- */

static void mark_dirty(sm_server *s, struct client *c)
{
    if (c->dirty)
        return;
    if (s->dirty_len == s->dirty_cap) {
        size_t cap = s->dirty_cap ? s->dirty_cap * 2 : 64;
        sm_conn_id *d = realloc(s->dirty, cap * sizeof *d);
        if (!d) {
            update_interest(s, c); /* then the poller's OUT event flushes it */
            return;
        }
        s->dirty = d;
        s->dirty_cap = cap;
    }
    s->dirty[s->dirty_len++] = c->id;
    c->dirty = 1;
}

/* Appends one frame to c's queue.  Returns 0, SM_EFULL or SM_ENOMEM and
 * leaves sm_last_error() alone: a broadcast that skips a full client
 * still succeeds. */
static int enqueue(sm_server *s, struct client *c, const void *msg, size_t len)
{
    size_t frame = SM_HEADER_LEN + len;
    if (queued(c) + frame > (c->dial ? c->dial->max_queue : s->opt.max_queue))
        return SM_EFULL;
    if (!queued(c))
        c->last_output = sm__now_ms(); /* the stall clock starts with the queue */
    if (c->out_len + frame > c->out_cap && c->out_pos > 0) {
        memmove(c->out, c->out + c->out_pos, queued(c));
        c->out_len -= c->out_pos;
        c->out_pos = 0;
    }
    if (c->out_len + frame > c->out_cap) {
        size_t cap = c->out_cap * 2 > c->out_len + frame ? c->out_cap * 2 : c->out_len + frame;
        uint8_t *out = realloc(c->out, cap);
        if (!out)
            return SM_ENOMEM;
        c->out = out;
        c->out_cap = cap;
        account(s, c);
    }
    sm_frame_header_put(c->out + c->out_len, (uint32_t)len);
    if (len)
        memcpy(c->out + c->out_len + SM_HEADER_LEN, msg, len);
    c->out_len += frame;
    if (queued(c) > s->opt.high_water)
        c->paused |= PAUSED_OUTPUT;
    mark_dirty(s, c);
    return 0;
}

/* Moves c's waiting posts into its queue while it is below high_water;
 * the rest wait (and count against max_posted) until it drains. */
static void queue_posts(sm_server *s, struct client *c)
{
    size_t bytes = 0;
    struct post *p;
    while ((p = c->posted) && c->state != DRAINING && c->state != CLOSING &&
           queued(c) <= s->opt.high_water && enqueue(s, c, p->msg, p->len) == 0) {
        if (!(c->posted = p->next))
            c->posted_tail = &c->posted;
        bytes += post_cost(p);
        free(p);
    }
    if (bytes) {
        pthread_mutex_lock(&s->post_lock);
        s->posted_bytes -= bytes;
        pthread_mutex_unlock(&s->post_lock);
    }
}

/* Writes what the socket takes now.  The queue's memory goes back as soon
 * as it is empty, so an idle client holds no buffer. */
/* Counts written bytes against the frames of a dialled link, so a link
 * that drops knows whether a frame was cut (see link_down). */
static void note_written(struct client *c, size_t n)
{
    size_t at = c->out_pos;
    while (n > 0) {
        if (!c->dial->frame_left)
            c->dial->frame_left = SM_HEADER_LEN + sm_frame_header_get(c->out + at);
        size_t take = n < c->dial->frame_left ? n : c->dial->frame_left;
        c->dial->frame_left -= take;
        at += take;
        n -= take;
    }
}

/* Writes what the socket takes now, through TLS if the client has it.
 * Returns 0 or SM_ETIMEDOUT (the socket is full), or an error. */
static int write_now(struct client *c, const uint8_t *buf, size_t len, size_t *sent)
{
    struct iovec iov = { (void *)buf, len };
    if (!c->tls)
        return sm__io_write_all(c->fd, 0, &iov, 1, SM_NOW, sent);
    int rc = sm__tls_write_all(c->tls, c->fd, &iov, 1, SM_NOW, sent);
    return rc == SM_EAGAIN ? SM_ETIMEDOUT : rc;
}

static void client_flush(sm_server *s, struct client *c)
{
    if (c->state == DOWN || c->state == CONNECTING)
        return; /* queued until the link is up */
    if (queued(c)) {
        size_t sent = 0;
        int rc = write_now(c, c->out + c->out_pos, queued(c), &sent);
        if (c->dial)
            note_written(c, sent);
        c->out_pos += sent;
        if (sent)
            c->last_output = sm__now_ms();
        if (rc && rc != SM_ETIMEDOUT) {
            client_free(s, c, rc);
            return;
        }
    }
    if (!queued(c)) {
        free(c->out);
        c->out = NULL;
        c->out_pos = c->out_len = c->out_cap = 0;
        account(s, c);
        if (c->paused & PAUSED_OUTPUT) {
            c->paused &= ~PAUSED_OUTPUT;
            touch(s, c); /* the idle clock stood still while we paused it */
        }
        if (c->state == DRAINING) {
            client_free(s, c, c->close_reason);
            return;
        }
        queue_posts(s, c);
    }
    update_interest(s, c);
}

static void flush_dirty(sm_server *s)
{
    /* Flushing may close clients whose on_close queues more: re-read the
     * length each time, and skip ids that are gone. */
    for (size_t i = 0; i < s->dirty_len; i++) {
        struct client *c = lookup(s, s->dirty[i]);
        if (c) {
            c->dirty = 0;
            client_flush(s, c);
        }
    }
    s->dirty_len = 0;
}

static void drain_and_close(sm_server *s, struct client *c, int reason)
{
    c->state = DRAINING;
    c->close_reason = reason;
    c->drain_deadline = sm__now_ms() + s->opt.stall_timeout_ms;
    mark_dirty(s, c);
}

/* Closes with a reset, so the kernel frees its buffers for c at once. */
static void client_reset(sm_server *s, struct client *c, int reason)
{
    struct linger reset = { 1, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    client_free(s, c, reason);
}

/* ---- dialled links ---- */

/* A name lookup for a dialled link, on a thread of its own, since
 * getaddrinfo blocks (for seconds when DNS is down).  Its result comes
 * back to the loop thread as a call, allocated up front so it cannot be
 * lost. */
struct resolve {
    struct resolve *next;
    sm_server *s;
    sm_conn_id id;
    uint64_t attempt;
    sm_addr addr;
    struct addrinfo *list;
    int rc;
    pthread_t thread;
    struct post *done; /* the call that hands the result to the loop */
};

static void dial_attempt(sm_server *s, uint64_t timer, void *arg);

/* The next try after the backoff.  on_retry comes last: it may disconnect
 * the link, which frees it. */
static void attempt_failed(sm_server *s, struct client *c, int reason)
{
    if (c->state == CONNECTING) {
        sm__poller_del(s->poller, c->fd);
        close(c->fd);
        c->fd = -1;
        s->connecting--;
    }
    c->state = DOWN;
    int delay = sm__backoff_next(&c->dial->backoff);
    sm_server_timer(s, delay, 0, dial_attempt, c, &c->dial->retry_timer);
    if (s->handlers.on_retry)
        s->handlers.on_retry(s, c->id, reason, delay, s->arg);
}

/* The connect succeeded: the link is a connection like any accepted one. */
static void link_up(sm_server *s, struct client *c)
{
    s->connecting--;
    c->state = OPEN;
    c->last_input = sm__now_ms();
    if (queued(c) <= s->opt.high_water)
        c->paused &= ~PAUSED_OUTPUT;
    sm__sock_set_nodelay(c->fd, c->family, s->opt.nagle);
    sm__backoff_reset(&c->dial->backoff);
    list_append(s, c);
    s->stats.conns++;
    update_interest(s, c);
    if (queued(c))
        mark_dirty(s, c);
    if (s->handlers.on_open)
        s->handlers.on_open(s, c->id, s->arg);
}

static void connect_done(sm_server *s, struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err)
        attempt_failed(s, c, -err);
    else
        link_up(s, c);
}

/* A non-blocking connect to sa: it completes in the loop (connect_done). */
static void start_connect(sm_server *s, struct client *c, const struct sockaddr *sa, socklen_t len)
{
    int fd = sm__socket(sa->sa_family, SOCK_NONBLOCK);
    int rc = fd < 0 ? fd : connect(fd, sa, len) == 0 ? 0 : -errno;
    if (!rc || rc == -EINPROGRESS)
        rc = sm__poller_add(s->poller, fd, c->id, SM_POLL_OUT);
    if (rc && rc != -EINPROGRESS) {
        if (fd >= 0)
            close(fd);
        /* A Unix listener with a full backlog says EAGAIN: try later. */
        attempt_failed(s, c, rc == -EAGAIN ? SM_EAGAIN : rc);
        return;
    }
    c->fd = fd;
    c->family = sa->sa_family;
    c->interest = SM_POLL_OUT;
    c->state = CONNECTING;
    c->dial->connect_until = sm__now_ms() + DIAL_CONNECT_MS;
    s->connecting++;
}

/* On the loop thread: the lookup is done; connect to its first address. */
static void resolved(sm_server *s, void *arg)
{
    struct resolve *r = arg, **p = &s->resolving;
    while (*p != r)
        p = &(*p)->next;
    *p = r->next;
    pthread_join(r->thread, NULL); /* it has handed over: it ends now */
    struct client *c = lookup(s, r->id);
    if (c && c->state == DOWN && c->dial->attempt == r->attempt) {
        if (r->rc == 0)
            start_connect(s, c, r->list->ai_addr, r->list->ai_addrlen);
        else
            attempt_failed(s, c, r->rc == EAI_MEMORY ? SM_ENOMEM : SM_EADDR);
    }
    if (r->list)
        freeaddrinfo(r->list);
    free(r);
}

static void queue_call(sm_server *s, struct post *p);

static void *resolve_main(void *arg)
{
    struct resolve *r = arg;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    r->rc = getaddrinfo(r->addr.host, r->addr.port, &hints, &r->list);
    queue_call(r->s, r->done);
    return NULL;
}

static void resolve_async(sm_server *s, struct client *c)
{
    struct resolve *r = calloc(1, sizeof *r);
    struct post *done = malloc(sizeof *done);
    if (!r || !done) {
        free(r);
        free(done);
        attempt_failed(s, c, SM_ENOMEM);
        return;
    }
    *done = (struct post){ .call = resolved, .call_arg = r };
    *r = (struct resolve){
        .s = s, .id = c->id, .attempt = c->dial->attempt, .addr = c->dial->addr, .done = done
    };
    int rc = pthread_create(&r->thread, NULL, resolve_main, r);
    if (rc) {
        free(r);
        free(done);
        attempt_failed(s, c, -rc);
        return;
    }
    r->next = s->resolving;
    s->resolving = r;
}

/* A retry timer fired: connect, through a lookup thread for a name. */
static void dial_attempt(sm_server *s, uint64_t timer, void *arg)
{
    (void)timer;
    struct client *c = arg;
    struct dial *d = c->dial;
    d->retry_timer = 0;
    d->attempt++;
    if (d->addr.is_unix) {
        start_connect(s, c, (const struct sockaddr *)&d->addr.unix_addr, d->addr.unix_len);
        return;
    }
    /* A numeric address resolves at once, without a thread. */
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *list;
    const char *host = d->addr.host[0] ? d->addr.host : "localhost";
    if (d->addr.host[0] && getaddrinfo(host, d->addr.port, &hints, &list) == 0) {
        start_connect(s, c, list->ai_addr, list->ai_addrlen);
        freeaddrinfo(list);
        return;
    }
    if (!d->addr.host[0])
        snprintf(d->addr.host, sizeof d->addr.host, "%s", host);
    resolve_async(s, c);
}

/* The link dropped (on_close was called): it keeps its id, its data and
 * what is queued, and is dialled again after the backoff.  A frame that
 * was partly written cannot be finished on a new connection: the rest of
 * it is dropped, so the peer sees whole frames only. */
static void link_down(sm_server *s, struct client *c)
{
    size_t cut = c->dial->frame_left < queued(c) ? c->dial->frame_left : queued(c);
    c->out_pos += cut;
    c->dial->frame_left = 0;
    sm__decoder_free(&c->decoder);
    sm__decoder_init(&c->decoder, s->opt.max_frame);
    account(s, c);
    c->state = DOWN;
    c->interest = 0;
    sm_server_timer(s, sm__backoff_next(&c->dial->backoff), 0, dial_attempt, c,
                    &c->dial->retry_timer);
}

/* Frees a dialled link for good (disconnected, or the server stops). */
static void link_free(sm_server *s, struct client *c)
{
    if (c->dial->retry_timer)
        sm_server_cancel_timer(s, c->dial->retry_timer);
    if (c->state == CONNECTING) {
        sm__poller_del(s->poller, c->fd);
        close(c->fd);
        s->connecting--;
    }
    s->links[c->id & ID_FD_MASK] = NULL;
    s->buffered -= c->holding;
    drop_posts(s, c->posted);
    sm__decoder_free(&c->decoder);
    free(c->out);
    free(c->dial);
    free(c);
}

/* A free slot in the links table, grown as needed; SIZE_MAX if none. */
static size_t link_slot(sm_server *s)
{
    for (size_t i = 0; i < s->links_len; i++)
        if (!s->links[i])
            return i;
    size_t len = s->links_len ? s->links_len * 2 : 16;
    struct client **t = len <= ID_FD_MASK ? realloc(s->links, len * sizeof(struct client *)) : NULL;
    if (!t)
        return SIZE_MAX;
    memset(t + s->links_len, 0, (len - s->links_len) * sizeof(struct client *));
    s->links = t;
    size_t slot = s->links_len;
    s->links_len = len;
    return slot;
}

SM_API int sm_server_connect(sm_server *s, const char *addr, const sm_dial_options *opts,
                             sm_conn_id *id)
{
    static const sm_dial_options defaults;
    if (!s || !addr)
        return sm__error_set(SM_EINVAL, "sm_server_connect: NULL argument");
    opts = opts ? opts : &defaults;
    if (opts->min_retry_ms < 0 || opts->max_retry_ms < 0)
        return sm__error_set(SM_EINVAL, "sm_server_connect: negative retry interval");
    sm_addr a;
    int rc = sm__addr_parse(&a, addr);
    if (rc)
        return rc;
    if (!a.is_unix && strcmp(a.port, "0") == 0)
        return sm__error_set(SM_EADDR, "dial %s: port 0 is only for listening", addr);
    struct client *c = calloc(1, sizeof *c);
    struct dial *d = calloc(1, sizeof *d);
    size_t slot = c && d ? link_slot(s) : SIZE_MAX;
    if (slot == SIZE_MAX) {
        free(c);
        free(d);
        return sm__error_set(SM_ENOMEM, "sm_server_connect %s", addr);
    }
    d->addr = a;
    snprintf(d->text, sizeof d->text, "%s", addr);
    sm__backoff_init(&d->backoff, opts->min_retry_ms, opts->max_retry_ms);
    d->max_queue = opts->max_queue ? opts->max_queue : s->opt.max_queue;
    c->dial = d;
    c->fd = -1;
    c->state = DOWN;
    c->posted_tail = &c->posted;
    c->id = DIAL_KEY | (sm_conn_id)(atomic_fetch_add(&next_sequence, 1) << ID_FD_BITS) | slot;
    sm__decoder_init(&c->decoder, s->opt.max_frame);
    s->links[slot] = c;
    /* The first try runs in the loop, so this call never blocks. */
    rc = sm_server_timer(s, 0, 0, dial_attempt, c, &d->retry_timer);
    if (rc) {
        link_free(s, c);
        return rc;
    }
    if (id)
        *id = c->id;
    return 0;
}

SM_API int sm_server_dialled(const sm_server *s, sm_conn_id id)
{
    struct client *c = s ? lookup(s, id) : NULL;
    return c && c->dial;
}

/* ---- input ---- */

static int deliver(void *arg, const uint8_t *msg, uint32_t len)
{
    sm_server *s = arg;
    struct client *c = s->feeding;
    if (s->handlers.on_message)
        s->handlers.on_message(s, c->id, msg, len, s->arg);
    return c->state != OPEN; /* disconnected by the handler: stop here */
}

int sm__server_input(sm_server *s, sm_conn_id id, const uint8_t *data, size_t len)
{
    struct client *c = lookup(s, id);
    if (!c || c->state != OPEN)
        return SM_ENOCONN;
    if (len == 0) {
        /* A dialled link keeps its queue for the next connection: the peer
         * that closed will not read it. */
        if (sm__decoder_in_frame(&c->decoder))
            client_free(s, c, SM_ETRUNCATED);
        else if (c->dial)
            client_free(s, c, SM_ECLOSED);
        else
            drain_and_close(s, c, SM_ECLOSED);
        return 0;
    }
    touch(s, c);
    s->feeding = c;
    int rc = sm__decoder_feed(&c->decoder, data, len, deliver, s);
    s->feeding = NULL;
    if (rc < 0) {
        client_free(s, c, rc); /* SM_ETOOBIG or SM_ENOMEM: only this client */
        return 0;
    }
    account(s, c);
    if (s->finisher == c && !sm__decoder_in_frame(&c->decoder))
        s->finisher = NULL; /* its frame is done: another may finish now */
    update_interest(s, c);
    return 0;
}

/* One read.  Returns 1 if the stream ended or failed (c may be gone), 0
 * if there may be more, or -1 if nothing is there now. */
static int client_read(sm_server *s, struct client *c)
{
    ssize_t n = c->tls ? sm__tls_read_wait(c->tls, c->fd, s->scratch, sizeof s->scratch, SM_NOW)
                       : sm__io_read(c->fd, 0, s->scratch, sizeof s->scratch, 0, SM_NOW);
    if (n == SM_ETIMEDOUT)
        return -1;
    if (n < 0) {
        client_free(s, c, (int)n);
        return 1;
    }
    sm__server_input(s, c->id, s->scratch, (size_t)n);
    return n == 0;
}

/* The peer will send no more (on a Unix socket the kernel says so at
 * once, before we have read what it sent): deliver everything still
 * queued for us, paused or not, so a burst followed by close loses
 * nothing and a cut frame is reported as truncated.  The peer can add
 * nothing, so this ends; frames are delivered as they complete, so at
 * most one partial frame is held. */
static void client_hangup(sm_server *s, struct client *c)
{
    sm_conn_id id = c->id;
    while ((c = lookup(s, id)) && c->state == OPEN && client_read(s, c) == 0) {
    }
}

static void client_error(sm_server *s, struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    int reason = err ? -err : SM_ECLOSED;
    if (!err && c->state == OPEN && sm__decoder_in_frame(&c->decoder))
        reason = SM_ETRUNCATED;
    client_free(s, c, c->state == DRAINING && !err ? c->close_reason : reason);
}

/* ---- the loop ---- */

static void take_posts(sm_server *s)
{
    pthread_mutex_lock(&s->post_lock);
    struct post *p = s->posts;
    s->posts = NULL;
    s->posts_tail = &s->posts;
    pthread_mutex_unlock(&s->post_lock);
    while (p) {
        struct post *next = p->next;
        struct client *c = p->call ? NULL : lookup(s, p->id);
        if (c && c->state != OPEN && !(c->dial && !c->dial->gone && c->state >= DOWN))
            c = NULL;
        if (p->call) {
            p->call(s, p->call_arg);
            p->next = NULL;
            drop_posts(s, p);
        } else if (c) {
            p->next = NULL;
            *c->posted_tail = p;
            c->posted_tail = &p->next;
            queue_posts(s, c);
        } else {
            p->next = NULL;
            drop_posts(s, p); /* its client is gone: on_close said so */
        }
        p = next;
    }
}

static void handle_event(sm_server *s, const sm_poll_event *ev)
{
    if (ev->key == SM_POLL_WAKE_KEY) {
        take_posts(s);
        return;
    }
    if (ev->key & LISTENER_KEY) {
        accept_clients(s, (int)(ev->key & ~LISTENER_KEY));
        return;
    }
    struct client *c = lookup(s, ev->key);
    if (c && c->state == DOWN)
        return; /* an event of the connection it just lost */
    if (c && c->state == CONNECTING) {
        connect_done(s, c);
        return;
    }
    if (c && c->state == HANDSHAKE) {
        handshake_step(s, c);
        return;
    }
    if (c && (ev->events & (SM_POLL_HUP | SM_POLL_ERR)) && c->state == OPEN)
        client_hangup(s, c);
    else if (c && (ev->events & SM_POLL_IN) && may_read(s, c))
        client_read(s, c);
    else if (c && (ev->events & SM_POLL_IN))
        update_interest(s, c); /* not to be read now: stop the reports */
    if ((c = lookup(s, ev->key)) && (ev->events & SM_POLL_OUT))
        client_flush(s, c);
    if ((c = lookup(s, ev->key)) && (ev->events & SM_POLL_ERR) && c->state < CLOSING)
        client_error(s, c);
}

/* Paused clients are skipped: the server stopped reading them, so their
 * silence is not theirs. */
static struct client *oldest_unpaused(const sm_server *s)
{
    struct client *c = s->oldest;
    while (c && (c->state == HANDSHAKE || (!may_read(s, c) && c->state == OPEN)))
        c = c->newer; /* a handshake has its own deadline */
    return c;
}

static void expire_idle(sm_server *s, int64_t now)
{
    struct client *c;
    while ((c = oldest_unpaused(s)) && now - c->last_input >= s->opt.idle_timeout_ms)
        client_free(s, c, SM_ETIMEDOUT);
}

/* Over the budget, the client with a partial frame nearest completion
 * may go on reading; the others wait until memory is freed. */
static struct client *pick_finisher(const sm_server *s)
{
    struct client *best = NULL;
    uint32_t best_missing = UINT32_MAX;
    for (struct client *c = s->oldest; c; c = c->newer) {
        uint32_t missing = decoder_missing(&c->decoder);
        if (c->state == OPEN && !c->paused && sm__decoder_in_frame(&c->decoder) &&
            missing < best_missing) {
            best = c;
            best_missing = missing;
        }
    }
    return best;
}

/* Once per loop iteration: over the budget, choose a finisher; under it,
 * read again from the clients the budget paused.  (Over it, a client is
 * paused when it next reads or is reported readable: see may_read.) */
static void apply_budget(sm_server *s)
{
    if (!over_budget(s)) {
        s->finisher = NULL;
        if (!s->budget_paused)
            return;
        s->budget_paused = 0;
        /* touch() moves c to the end, where the walk meets it again with
         * IN set: then it is left alone. */
        struct client *c = s->oldest, *next;
        for (; c; c = next) {
            next = c->newer;
            if (!(c->interest & SM_POLL_IN) && may_read(s, c))
                touch(s, c); /* the idle clock stood still while we paused it */
            update_interest(s, c);
        }
        return;
    }
    if (!s->finisher && (s->finisher = pick_finisher(s))) {
        touch(s, s->finisher); /* its stall clock starts now */
        update_interest(s, s->finisher);
    }
}

/* A peer that takes none of its queued bytes, a drain that does not end,
 * or a finisher that stops sending its frame holds memory for nothing:
 * after stall_timeout_ms it is reset. */
static int stalled(const sm_server *s, const struct client *c, int64_t now)
{
    int64_t limit = s->opt.stall_timeout_ms;
    if (c->state == DOWN || c->state == CONNECTING)
        return 0; /* its queue waits for the link; the connect has its own limit */
    if (c->state == HANDSHAKE)
        return now >= c->handshake_until;
    if (queued(c) && now - c->last_output >= limit)
        return 1;
    if (c->state == DRAINING && now >= c->drain_deadline)
        return 1;
    return c == s->finisher && now - c->last_input >= limit;
}

/* Large partial frames come and go in sizes glibc then serves from its
 * heap rather than mmap, and a heap only shrinks from the top: after an
 * attack the memory would stay with the process.  Trimming returns free
 * pages to the system, once a lot has been freed. */
static void give_back_memory(sm_server *s)
{
    if (s->buffered > s->buffered_peak)
        s->buffered_peak = s->buffered;
    if (s->buffered_peak - s->buffered < TRIM_BYTES)
        return;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    s->buffered_peak = s->buffered;
}

static void reset_stalled(sm_server *s, int64_t now)
{
    if (now < s->stall_check_at)
        return;
    s->stall_check_at = now + STALL_CHECK_MS;
    for (size_t i = 0; s->connecting && i < s->links_len; i++) {
        struct client *l = s->links[i];
        if (l && l->state == CONNECTING && now >= l->dial->connect_until)
            attempt_failed(s, l, SM_ETIMEDOUT);
    }
    struct client *c = s->oldest;
    while (c) {
        struct client *next = c->newer;
        if (stalled(s, c, now) && c->state == HANDSHAKE) {
            handshake_failed(s, c);
        } else if (stalled(s, c, now)) {
            s->stats.stalled++;
            client_reset(s, c, SM_ETIMEDOUT);
        }
        c = next;
    }
}

static int next_timeout(const sm_server *s, int64_t now)
{
    /* Output queued outside a handler waits for the next iteration. */
    if (s->dirty_len)
        return 0;
    int64_t t = INT64_MAX;
    const struct client *idle = s->opt.idle_timeout_ms ? oldest_unpaused(s) : NULL;
    if (idle)
        t = idle->last_input + s->opt.idle_timeout_ms - now;
    if (s->accept_paused && s->accept_retry_at - now < t)
        t = s->accept_retry_at - now;
    if ((s->buffered || s->connecting || s->handshaking) && s->stall_check_at - now < t)
        t = s->stall_check_at - now;
    int64_t due = sm__timers_next(&s->timers);
    if (due != INT64_MAX && due - now < t)
        t = due - now;
    if (t == INT64_MAX)
        return -1;
    return t < 0 ? 0 : t > 60000 ? 60000 : (int)t;
}

static void close_all(sm_server *s, int reason)
{
    s->closing_all = 1;
    for (size_t i = 0; i < s->links_len; i++)
        if (s->links[i] && s->links[i]->state >= DOWN)
            link_free(s, s->links[i]);
    struct client *c;
    for (c = s->oldest; c;) {
        struct client *next = c->newer;
        if (c->state == HANDSHAKE)
            handshake_failed(s, c);
        c = next;
    }
    while ((c = s->oldest)) {
        /* One last non-blocking try, so a reply queued just before the
         * stop still reaches a client that reads.  (client_free() unlinks
         * c, which the analyzer misses.) */
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc) */
        if (queued(c)) {
            size_t sent;
            write_now(c, c->out + c->out_pos, queued(c), &sent);
        }
        client_free(s, c, reason);
    }
    s->dirty_len = 0;
    s->closing_all = 0;
}

/* Runs the timers due now, each at most once per call, so a callback that
 * sets a timer of 0 ms cannot keep the loop here. */
static void run_timers(sm_server *s, int64_t now)
{
    size_t due = s->timers.len;
    sm_timer t;
    while (due-- > 0 && sm__timers_pop_due(&s->timers, now, &t)) {
        s->firing = t.id;
        s->firing_cancelled = 0;
        t.fn(s, t.id, t.arg);
        s->firing = 0;
        if (t.repeat_ms > 0 && !s->firing_cancelled) {
            t.due = now + t.repeat_ms;
            sm__timers_add(&s->timers, &t); /* on SM_ENOMEM it stops repeating */
        }
    }
}

/* What every loop iteration does after handling events. */
static void after_events(sm_server *s)
{
    /* Expire first, so what on_close handlers queue is written now. */
    int64_t now = sm__now_ms();
    if (s->opt.idle_timeout_ms)
        expire_idle(s, now);
    run_timers(s, now);
    flush_dirty(s);
    reset_stalled(s, now);
    apply_budget(s);
    give_back_memory(s);
    if (s->accept_paused && now >= s->accept_retry_at)
        set_accepting(s, 1);
}

/* A requested stop ends the run: every client closes, and the server may
 * run again. */
static void end_run(sm_server *s)
{
    close_all(s, SM_ESTOPPED);
    atomic_store(&s->stop_requested, 0);
}

SM_API int sm_server_run_once(sm_server *s, int timeout_ms)
{
    if (!s)
        return sm__error_set(SM_EINVAL, "sm_server_run_once: NULL server");
    if (atomic_load(&s->stop_requested)) {
        end_run(s);
        return SM_ESTOPPED;
    }
    int wait = next_timeout(s, sm__now_ms());
    if (timeout_ms >= 0 && (wait < 0 || timeout_ms < wait))
        wait = timeout_ms;
    sm_poll_event events[EVENT_BATCH];
    int n = sm__poller_wait(s->poller, events, EVENT_BATCH, wait);
    if (n < 0)
        return sm__error_set(n, "sm_server_run_once: wait for events");
    for (int i = 0; i < n; i++)
        handle_event(s, &events[i]);
    after_events(s);
    return n;
}

SM_API int sm_server_run(sm_server *s)
{
    if (!s)
        return sm__error_set(SM_EINVAL, "sm_server_run: NULL server");
    int rc;
    while ((rc = sm_server_run_once(s, -1)) >= 0) {
    }
    if (rc == SM_ESTOPPED)
        return 0;
    end_run(s); /* waiting failed: end as a stop would */
    return rc;
}

SM_API int sm_server_fd(const sm_server *s)
{
    return s ? sm__poller_fd(s->poller) : SM_EINVAL;
}

SM_API int sm_server_timeout(const sm_server *s)
{
    return s ? next_timeout(s, sm__now_ms()) : SM_EINVAL;
}

SM_API int sm_server_timer(sm_server *s, int delay_ms, int repeat_ms, sm_timer_fn *fn, void *arg,
                           uint64_t *id)
{
    if (!s || !fn || delay_ms < 0 || repeat_ms < 0)
        return sm__error_set(SM_EINVAL, "sm_server_timer: NULL argument or negative time");
    sm_timer t = { sm__now_ms() + delay_ms, ++s->next_timer_id, repeat_ms, fn, arg };
    if (sm__timers_add(&s->timers, &t))
        return sm__error_set(SM_ENOMEM, "sm_server_timer");
    if (id)
        *id = t.id;
    return 0;
}

SM_API int sm_server_cancel_timer(sm_server *s, uint64_t id)
{
    if (s && id && id == s->firing && !s->firing_cancelled) {
        s->firing_cancelled = 1;
        return 0;
    }
    if (!s)
        return sm__error_set(SM_EINVAL, "sm_server_cancel_timer: NULL server");
    if (sm__timers_cancel(&s->timers, id))
        return sm__error_set(SM_ENOCONN, "sm_server_cancel_timer: no timer %llu",
                             (unsigned long long)id);
    return 0;
}

/* Sets or clears the application's pause on one client. */
static int set_user_pause(sm_server *s, sm_conn_id id, int on)
{
    struct client *c = find_open(s, id);
    if (!c)
        return SM_ENOCONN;
    if (!on && (c->paused & PAUSED_BY_USER))
        touch(s, c); /* the idle clock stood still while it was paused */
    c->paused = on ? c->paused | PAUSED_BY_USER : c->paused & ~PAUSED_BY_USER;
    update_interest(s, c);
    return 0;
}

SM_API int sm_server_pause(sm_server *s, sm_conn_id id)
{
    return set_user_pause(s, id, 1);
}

SM_API int sm_server_resume(sm_server *s, sm_conn_id id)
{
    return set_user_pause(s, id, 0);
}

SM_API void sm_server_stop(sm_server *s)
{
    if (!s)
        return;
    /* Only a lock-free atomic store and write(): async-signal-safe. */
    atomic_store(&s->stop_requested, 1);
    sm__poller_wake(s->poller);
}

/* ---- setup and the rest of the API ---- */

static int resolve_options(sm_server_options *dst, const sm_server_options *opts)
{
    static const sm_server_options defaults;
    *dst = opts ? *opts : defaults;
    if (dst->idle_timeout_ms < 0 || dst->max_conns < 0 || dst->stall_timeout_ms < 0)
        return sm__error_set(SM_EINVAL, "server options: negative value");
    if (!dst->max_frame)
        dst->max_frame = SM_DEFAULT_MAX_FRAME;
    if (!dst->high_water)
        dst->high_water = 1024 * 1024;
    size_t frames = 2 * (size_t)dst->max_frame;
    if (!dst->max_queue) /* saturating: high_water may be SIZE_MAX */
        dst->max_queue = dst->high_water > SIZE_MAX - frames ? SIZE_MAX : dst->high_water + frames;
    if (!dst->max_buffered)
        dst->max_buffered = SM_SERVER_DEFAULT_BUDGET;
    if (!dst->max_posted)
        dst->max_posted = frames > SM_SERVER_DEFAULT_POSTED ? frames : SM_SERVER_DEFAULT_POSTED;
    if (!dst->stall_timeout_ms)
        dst->stall_timeout_ms = SM_SERVER_DEFAULT_STALL_MS;
    return 0;
}

SM_API int sm_server_new(sm_server **out, const sm_server_handlers *handlers,
                         const sm_server_options *opts, void *arg)
{
    if (!out)
        return sm__error_set(SM_EINVAL, "sm_server_new: NULL argument");
    *out = NULL;
    sm_server *s = calloc(1, sizeof *s);
    if (!s)
        return sm__error_set(SM_ENOMEM, "sm_server_new");
    int rc = resolve_options(&s->opt, opts);
    if (rc) {
        free(s);
        return rc;
    }
    rc = sm__poller_new(&s->poller);
    if (rc) {
        free(s);
        return sm__error_set(rc, "sm_server_new: poller");
    }
    if (handlers)
        s->handlers = *handlers;
    s->arg = arg;
    s->posts_tail = &s->posts;
    pthread_mutex_init(&s->post_lock, NULL);
    atomic_init(&s->stop_requested, 0);
    *out = s;
    return 0;
}

/* Watches a bound socket for clients; returns its index or an error. */
static int add_listener(sm_server *s, sm_bound *b, sm_tls_ctx *tls, const char *what)
{
    sm_bound *list = realloc(s->listeners, (size_t)(s->listener_count + 1) * sizeof *list);
    if (!list)
        return sm__error_set(SM_ENOMEM, "%s", what);
    s->listeners = list;
    sm_tls_ctx **ctxs =
        realloc(s->listener_tls, (size_t)(s->listener_count + 1) * sizeof(sm_tls_ctx *));
    if (!ctxs)
        return sm__error_set(SM_ENOMEM, "%s", what);
    s->listener_tls = ctxs;
    ctxs[s->listener_count] = tls;
    int index = s->listener_count;
    int rc = sm__poller_add(s->poller, b->fd, LISTENER_KEY | (uint64_t)index,
                            s->accept_paused ? 0 : SM_POLL_IN);
    if (rc)
        return sm__error_set(rc, "%s", what);
    s->listeners[s->listener_count++] = *b;
    return index;
}

SM_API int sm_server_listen_tls(sm_server *s, const char *addr, const sm_tls_options *tls)
{
    if (!s || !addr)
        return sm__error_set(SM_EINVAL, "sm_server_listen: NULL argument");
    sm_tls_ctx *ctx = NULL;
    if (tls) {
        int rc = sm__tls_ctx_new(&ctx, tls, 1);
        if (rc)
            return rc;
    }
    sm_addr a;
    sm_bound b;
    int rc = sm__addr_parse(&a, addr);
    if (!rc)
        rc = sm__bind(&b, &a, addr);
    if (!rc && (rc = add_listener(s, &b, ctx, addr)) < 0)
        sm__unbind(&b);
    if (rc < 0)
        sm__tls_ctx_unref(ctx);
    return rc;
}

SM_API int sm_server_listen(sm_server *s, const char *addr)
{
    return sm_server_listen_tls(s, addr, NULL);
}

SM_API int sm_server_listen_fd(sm_server *s, int fd)
{
    if (!s || fd < 0)
        return sm__error_set(SM_EINVAL, "sm_server_listen_fd: NULL server or negative fd");
    sm_bound b = { .fd = fd };
    int rc = sm__sock_adopt(fd, 1, &b.family);
    if (rc)
        return sm__error_set(rc, "sm_server_listen_fd: fd %d", fd);
    return add_listener(s, &b, NULL, "sm_server_listen_fd");
}

/* systemd's protocol (sd_listen_fds(3)): the sockets are fds 3, 4, ...,
 * LISTEN_FDS of them, meant for the process LISTEN_PID. */
SM_API int sm_server_listen_inherited(sm_server *s)
{
    if (!s)
        return sm__error_set(SM_EINVAL, "sm_server_listen_inherited: NULL server");
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    long count = strtol(fds, NULL, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    for (long i = 0; i < count && i < 1024; i++) {
        int rc = sm_server_listen_fd(s, 3 + (int)i);
        if (rc < 0)
            return rc;
    }
    return count < 0 ? 0 : (int)count;
}

SM_API int sm_server_addr(const sm_server *s, int index, char *buf, size_t len)
{
    if (!s || index < 0 || index >= s->listener_count || !buf)
        return sm__error_set(SM_EINVAL, "sm_server_addr: no listener %d", index);
    return sm__addr_of_fd(s->listeners[index].fd, 0, buf, len);
}

/* The checks every send-like call makes on its arguments. */
static int check_send(const sm_server *s, const void *msg, size_t len, const char *what)
{
    if (!s || (!msg && len))
        return sm__error_set(SM_EINVAL, "%s: NULL argument", what);
    if (len > UINT32_MAX)
        return sm__error_set(SM_ETOOBIG, "%s: %zu bytes", what, len);
    return 0;
}

SM_API int sm_server_send(sm_server *s, sm_conn_id id, const void *msg, size_t len)
{
    int rc = check_send(s, msg, len, "sm_server_send");
    if (rc)
        return rc;
    struct client *c = find_sendable(s, id);
    if (!c)
        return SM_ENOCONN;
    rc = enqueue(s, c, msg, len);
    if (rc)
        return sm__error_set(rc, "queue %zu bytes to %llu", SM_HEADER_LEN + len,
                             (unsigned long long)id);
    return 0;
}

SM_API int sm_server_broadcast(sm_server *s, const void *msg, size_t len, sm_conn_id except)
{
    int rc = check_send(s, msg, len, "sm_server_broadcast");
    if (rc)
        return rc;
    int count = 0;
    for (struct client *c = s->oldest; c; c = c->newer)
        if (c->id != except && c->state == OPEN && enqueue(s, c, msg, len) == 0)
            count++;
    return count;
}

/* Queues p for the loop thread, whatever max_posted says (the library's
 * own calls must not be lost), and wakes the loop. */
static void queue_call(sm_server *s, struct post *p)
{
    pthread_mutex_lock(&s->post_lock);
    s->posted_bytes += post_cost(p);
    *s->posts_tail = p;
    s->posts_tail = &p->next;
    pthread_mutex_unlock(&s->post_lock);
    sm__poller_wake(s->poller);
}

/* Queues p for the loop thread, within max_posted, and wakes the loop. */
static int add_post(sm_server *s, struct post *p, const char *what)
{
    pthread_mutex_lock(&s->post_lock);
    int full = post_cost(p) > s->opt.max_posted - s->posted_bytes;
    if (!full) {
        s->posted_bytes += post_cost(p);
        *s->posts_tail = p;
        s->posts_tail = &p->next;
    }
    pthread_mutex_unlock(&s->post_lock);
    if (full) {
        free(p);
        return sm__error_set(SM_EFULL, "%s: %zu bytes already posted", what, s->opt.max_posted);
    }
    sm__poller_wake(s->poller);
    return 0;
}

SM_API int sm_server_post(sm_server *s, sm_conn_id id, const void *msg, size_t len)
{
    int rc = check_send(s, msg, len, "sm_server_post");
    if (rc)
        return rc;
    if (id == 0)
        return sm__error_set(SM_EINVAL, "sm_server_post: id 0 is never a connection");
    /* An id whose sequence was never handed out names no connection. */
    if ((id & ~DIAL_KEY) >> ID_FD_BITS >= atomic_load(&next_sequence))
        return sm__error_set(SM_ENOCONN, "sm_server_post: connection %llu", (unsigned long long)id);
    if (SM_HEADER_LEN + len > s->opt.max_queue)
        return sm__error_set(SM_EFULL, "sm_server_post: %zu bytes can never fit max_queue", len);
    struct post *p = malloc(sizeof *p + len);
    if (!p)
        return sm__error_set(SM_ENOMEM, "sm_server_post");
    *p = (struct post){ .id = id, .len = len };
    if (len)
        memcpy(p->msg, msg, len);
    return add_post(s, p, "sm_server_post");
}

SM_API int sm_server_call(sm_server *s, sm_call_fn *fn, void *arg)
{
    if (!s || !fn)
        return sm__error_set(SM_EINVAL, "sm_server_call: NULL argument");
    struct post *p = malloc(sizeof *p);
    if (!p)
        return sm__error_set(SM_ENOMEM, "sm_server_call");
    *p = (struct post){ .call = fn, .call_arg = arg };
    return add_post(s, p, "sm_server_call");
}

SM_API int sm_server_disconnect(sm_server *s, sm_conn_id id)
{
    struct client *c = find_sendable(s, id);
    if (!c)
        return SM_ENOCONN;
    if (c->dial)
        c->dial->gone = 1;
    if (c->state == OPEN)
        drain_and_close(s, c, 0);
    else
        link_free(s, c); /* not up: nothing to drain, no on_close */
    return 0;
}

SM_API int sm_server_set_data(sm_server *s, sm_conn_id id, void *data)
{
    struct client *c = s ? lookup(s, id) : NULL;
    if (!c)
        return sm__error_set(SM_ENOCONN, "connection %llu", (unsigned long long)id);
    c->data = data;
    return 0;
}

SM_API void *sm_server_data(const sm_server *s, sm_conn_id id)
{
    struct client *c = s ? lookup(s, id) : NULL;
    return c ? c->data : NULL;
}

/* The client a call that writes into buf is about; NULL (with the error
 * set in *rc) for an unknown id or a NULL buf. */
static struct client *writer_client(const sm_server *s, sm_conn_id id, const char *buf,
                                    const char *what, int *rc)
{
    struct client *c = s ? lookup(s, id) : NULL;
    *rc = !c     ? sm__error_set(SM_ENOCONN, "connection %llu", (unsigned long long)id)
          : !buf ? sm__error_set(SM_EINVAL, "%s: NULL buffer", what)
                 : 0;
    return *rc ? NULL : c;
}

SM_API int sm_server_peer(const sm_server *s, sm_conn_id id, char *buf, size_t len)
{
    int rc;
    struct client *c = writer_client(s, id, buf, "sm_server_peer", &rc);
    return c ? sm__addr_of_fd(c->fd, 1, buf, len) : rc;
}

SM_API int sm_server_peer_cert(const sm_server *s, sm_conn_id id, char *buf, size_t len)
{
    int rc;
    struct client *c = writer_client(s, id, buf, "sm_server_peer_cert", &rc);
    if (c && !c->tls)
        return sm__error_set(SM_EVERIFY, "connection %llu is not TLS", (unsigned long long)id);
    return c ? sm__tls_peer_subject(c->tls, buf, len) : rc;
}

SM_API size_t sm_server_ids(const sm_server *s, sm_conn_id *ids, size_t cap)
{
    size_t n = 0;
    for (const struct client *c = s ? s->oldest : NULL; c; c = c->newer) {
        if (c->state != OPEN)
            continue;
        if (n < cap)
            ids[n] = c->id;
        n++;
    }
    for (size_t i = 0; s && i < s->links_len; i++) {
        const struct client *l = s->links[i];
        if (l && l->state >= DOWN && !l->dial->gone) {
            if (n < cap)
                ids[n] = l->id;
            n++;
        }
    }
    return n;
}

SM_API void sm_server_get_stats(const sm_server *s, sm_server_stats *st)
{
    static const sm_server_stats none;
    if (!st)
        return;
    *st = s ? s->stats : none;
    st->buffered = s ? s->buffered : 0;
}

SM_API void sm_server_free(sm_server *s)
{
    if (!s)
        return;
    /* Lookup threads still running hand their result to s: wait for them. */
    while (s->resolving) {
        struct resolve *r = s->resolving;
        s->resolving = r->next;
        pthread_join(r->thread, NULL);
        if (r->list)
            freeaddrinfo(r->list);
        free(r);
    }
    close_all(s, SM_ESTOPPED);
    for (int i = 0; i < s->listener_count; i++)
        sm__unbind(&s->listeners[i]);
    for (int i = 0; i < s->listener_count; i++)
        sm__tls_ctx_unref(s->listener_tls[i]);
    free(s->listener_tls);
    free(s->listeners);
    /* No client is left to queue to, and queued calls are not run. */
    pthread_mutex_lock(&s->post_lock);
    struct post *left = s->posts;
    s->posts = NULL;
    pthread_mutex_unlock(&s->post_lock);
    drop_posts(s, left);
    sm__poller_free(s->poller);
    sm__timers_free(&s->timers);
    pthread_mutex_destroy(&s->post_lock);
    free(s->by_fd);
    free(s->links);
    free(s->dirty);
    free(s);
}
