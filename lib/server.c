#include "server.h"

#include "addr.h"
#include "error.h"
#include "frame.h"
#include "listen.h"
#include "poller.h"
#include "sock.h"

#include <errno.h>
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

/* An id is (sequence << 24 | fd): the fd finds the client in O(1), the
 * process-wide sequence makes the id unique.  Listener keys use bit 63,
 * which a sequence never reaches. */
#define ID_FD_BITS 24
#define ID_FD_MASK ((UINT64_C(1) << ID_FD_BITS) - 1)
#define LISTENER_KEY (UINT64_C(1) << 63)

enum client_state {
    OPEN,
    DRAINING, /* send what is queued, then close with close_reason */
    CLOSING   /* inside on_close: nothing may be queued any more */
};

struct client {
    sm_conn_id id;
    int fd;
    enum client_state state;
    int close_reason;
    unsigned interest;            /* events registered with the poller */
    int paused;                   /* queue passed high_water: not reading */
    int dirty;                    /* id is in server->dirty */
    int64_t last_input;           /* ms; the idle timeout counts from here */
    struct client *older, *newer; /* every client, by last input */
    void *data;
    uint8_t *out; /* queued frames are out[out_pos, out_len); NULL when none */
    size_t out_pos, out_len, out_cap;
    sm_decoder decoder;
};

struct post {
    struct post *next;
    sm_conn_id id;
    size_t len;
    uint8_t msg[];
};

struct sm_server {
    sm_server_handlers handlers;
    void *arg;
    sm_server_options opt;
    sm_poller *poller;
    sm_listener **listeners;
    int listener_count;
    int accept_paused;
    int64_t accept_retry_at;
    struct client **by_fd;
    size_t by_fd_len;
    struct client *oldest, *newest;
    sm_conn_id *dirty; /* clients with output to flush this iteration */
    size_t dirty_len, dirty_cap;
    struct client *feeding; /* client whose messages are being delivered */
    atomic_int stop_requested;
    pthread_mutex_t post_lock;
    struct post *posts, **posts_tail;
    sm_server_stats stats;
    uint8_t scratch[SCRATCH_LEN]; /* every read lands here first */
};

/* The sequence is process-wide so ids never repeat across servers either. */
static atomic_uint_fast64_t next_sequence = 1;

static struct client *lookup(const sm_server *s, sm_conn_id id)
{
    uint64_t fd = id & ID_FD_MASK;
    struct client *c = fd < s->by_fd_len ? s->by_fd[fd] : NULL;
    return c && c->id == id ? c : NULL;
}

/* The open client with this id, or NULL with sm_last_error() set. */
static struct client *find_open(const sm_server *s, sm_conn_id id)
{
    struct client *c = s ? lookup(s, id) : NULL;
    if (c && c->state == OPEN)
        return c;
    sm_error_set(SM_ENOCONN, "connection %llu", (unsigned long long)id);
    return NULL;
}

static size_t queued(const struct client *c)
{
    return c->out_len - c->out_pos;
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
    c->last_input = sm_now_ms();
    if (s->newest != c) {
        list_remove(s, c);
        list_append(s, c);
    }
}

/* ---- accepting ---- */

static void set_accepting(sm_server *s, int on)
{
    for (int i = 0; i < s->listener_count; i++)
        sm_poller_mod(s->poller, sm_listener_fd(s->listeners[i]), LISTENER_KEY | (uint64_t)i,
                      on ? SM_POLL_IN : 0);
    s->accept_paused = !on;
    if (!on) {
        s->accept_retry_at = sm_now_ms() + ACCEPT_RETRY_MS;
        s->stats.accept_pauses++;
    }
}

static void update_interest(sm_server *s, struct client *c)
{
    unsigned want =
        (c->state == OPEN && !c->paused ? SM_POLL_IN : 0) | (queued(c) ? SM_POLL_OUT : 0);
    if (want != c->interest && sm_poller_mod(s->poller, c->fd, c->id, want) == 0)
        c->interest = want;
}

static void client_free(sm_server *s, struct client *c, int reason)
{
    c->state = CLOSING;
    if (s->handlers.on_close)
        s->handlers.on_close(s, c->id, reason, s->arg);
    sm_poller_del(s->poller, c->fd);
    close(c->fd);
    s->by_fd[c->fd] = NULL;
    list_remove(s, c);
    sm_decoder_free(&c->decoder);
    free(c->out);
    free(c);
    s->stats.conns--;
    /* A descriptor is free again: accepting may work now. */
    if (s->accept_paused)
        set_accepting(s, 1);
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

/* Registers fd as a new client; NULL (and fd closed) on failure. */
static struct client *client_open(sm_server *s, int fd, int family)
{
    struct client *c = NULL;
    if ((uint64_t)fd > ID_FD_MASK || ((size_t)fd >= s->by_fd_len && grow_table(s, fd)) ||
        !(c = calloc(1, sizeof *c))) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->id = (sm_conn_id)(atomic_fetch_add(&next_sequence, 1) << ID_FD_BITS) | (uint64_t)fd;
    c->interest = SM_POLL_IN;
    if (sm_poller_add(s->poller, fd, c->id, SM_POLL_IN)) {
        free(c);
        close(fd);
        return NULL;
    }
    sm_sock_set_nodelay(fd, family, s->opt.nagle);
    sm_decoder_init(&c->decoder, s->opt.max_frame);
    c->last_input = sm_now_ms();
    s->by_fd[fd] = c;
    list_append(s, c);
    s->stats.conns++;
    if (s->handlers.on_open)
        s->handlers.on_open(s, c->id, s->arg);
    return c;
}

int sm_server_adopt(sm_server *s, int fd, sm_conn_id *id)
{
    struct client *c = client_open(s, fd, AF_UNIX);
    if (!c)
        return SM_ENOMEM;
    *id = c->id;
    return 0;
}

static void accept_clients(sm_server *s, int index)
{
    sm_listener *l = s->listeners[index];
    for (int i = 0; i < ACCEPT_BATCH && !s->accept_paused; i++) {
        int fd = accept4(sm_listener_fd(l), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            /* Out of descriptors: the client stays in the backlog, and a
             * level-triggered listener would wake us at once, forever. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                set_accepting(s, 0);
            return;
        }
        s->stats.accepted++;
        if (s->opt.max_conns && s->stats.conns >= (size_t)s->opt.max_conns) {
            close(fd);
            s->stats.rejected++;
            continue;
        }
        client_open(s, fd, sm_listener_family(l));
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

static int enqueue(sm_server *s, struct client *c, const void *msg, size_t len)
{
    size_t frame = SM_HEADER_LEN + len;
    if (queued(c) + frame > s->opt.max_queue)
        return sm_error_set(SM_EFULL, "queue %zu more bytes to %llu", frame,
                            (unsigned long long)c->id);
    if (c->out_len + frame > c->out_cap && c->out_pos > 0) {
        memmove(c->out, c->out + c->out_pos, queued(c));
        c->out_len -= c->out_pos;
        c->out_pos = 0;
    }
    if (c->out_len + frame > c->out_cap) {
        size_t cap = c->out_cap * 2 > c->out_len + frame ? c->out_cap * 2 : c->out_len + frame;
        uint8_t *out = realloc(c->out, cap);
        if (!out)
            return sm_error_set(SM_ENOMEM, "queue %zu bytes", frame);
        c->out = out;
        c->out_cap = cap;
    }
    sm_frame_header_put(c->out + c->out_len, (uint32_t)len);
    if (len)
        memcpy(c->out + c->out_len + SM_HEADER_LEN, msg, len);
    c->out_len += frame;
    if (queued(c) > s->opt.high_water)
        c->paused = 1;
    mark_dirty(s, c);
    return 0;
}

/* Writes what the socket takes now.  The queue's memory goes back as soon
 * as it is empty, so an idle client holds no buffer. */
static void client_flush(sm_server *s, struct client *c)
{
    while (queued(c)) {
        ssize_t n = send(c->fd, c->out + c->out_pos, queued(c), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            client_free(s, c, -errno);
            return;
        }
        c->out_pos += (size_t)n;
    }
    if (!queued(c)) {
        free(c->out);
        c->out = NULL;
        c->out_pos = c->out_len = c->out_cap = 0;
        c->paused = 0;
        if (c->state == DRAINING) {
            client_free(s, c, c->close_reason);
            return;
        }
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
    mark_dirty(s, c);
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

int sm_server_input(sm_server *s, sm_conn_id id, const uint8_t *data, size_t len)
{
    struct client *c = lookup(s, id);
    if (!c || c->state != OPEN)
        return SM_ENOCONN;
    if (len == 0) {
        if (sm_decoder_in_frame(&c->decoder))
            client_free(s, c, SM_ETRUNCATED);
        else
            drain_and_close(s, c, SM_ECLOSED);
        return 0;
    }
    touch(s, c);
    s->feeding = c;
    int rc = sm_decoder_feed(&c->decoder, data, len, deliver, s);
    s->feeding = NULL;
    if (rc < 0)
        client_free(s, c, rc); /* SM_ETOOBIG or SM_ENOMEM: only this client */
    return 0;
}

static void client_read(sm_server *s, struct client *c)
{
    ssize_t n = recv(c->fd, s->scratch, sizeof s->scratch, MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            client_free(s, c, -errno);
        return;
    }
    sm_server_input(s, c->id, s->scratch, (size_t)n);
}

static void client_error(sm_server *s, struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    client_free(s, c, err ? -err : SM_ECLOSED);
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
        struct client *c = lookup(s, p->id);
        if (c && c->state == OPEN)
            enqueue(s, c, p->msg, p->len);
        free(p);
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
    if (c && (ev->events & SM_POLL_IN) && c->state == OPEN && !c->paused)
        client_read(s, c);
    if ((c = lookup(s, ev->key)) && (ev->events & SM_POLL_OUT))
        client_flush(s, c);
    if ((c = lookup(s, ev->key)) && (ev->events & SM_POLL_ERR))
        client_error(s, c);
}

static void expire_idle(sm_server *s, int64_t now)
{
    struct client *c;
    /* client_free() unlinks c from the list, which the analyzer misses. */
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc) */
    while ((c = s->oldest) && now - c->last_input >= s->opt.idle_timeout_ms)
        client_free(s, c, SM_ETIMEDOUT);
}

static int next_timeout(const sm_server *s, int64_t now)
{
    int64_t t = INT64_MAX;
    if (s->opt.idle_timeout_ms && s->oldest)
        t = s->oldest->last_input + s->opt.idle_timeout_ms - now;
    if (s->accept_paused && s->accept_retry_at - now < t)
        t = s->accept_retry_at - now;
    if (t == INT64_MAX)
        return -1;
    return t < 0 ? 0 : t > 60000 ? 60000 : (int)t;
}

static void close_all(sm_server *s, int reason)
{
    struct client *c;
    while ((c = s->oldest)) {
        /* One last non-blocking try, so a reply queued just before the
         * stop still reaches a client that reads.  (client_free() unlinks
         * c, which the analyzer misses.) */
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc) */
        if (queued(c))
            send(c->fd, c->out + c->out_pos, queued(c), MSG_NOSIGNAL | MSG_DONTWAIT);
        client_free(s, c, reason);
    }
    s->dirty_len = 0;
}

SM_API int sm_server_run(sm_server *s)
{
    if (!s)
        return sm_error_set(SM_EINVAL, "sm_server_run: NULL server");
    sm_poll_event events[EVENT_BATCH];
    int rc = 0;
    while (!atomic_load(&s->stop_requested)) {
        int n = sm_poller_wait(s->poller, events, EVENT_BATCH, next_timeout(s, sm_now_ms()));
        if (n < 0) {
            rc = sm_error_set(n, "sm_server_run: wait for events");
            break;
        }
        for (int i = 0; i < n; i++)
            handle_event(s, &events[i]);
        /* Expire first, so what on_close handlers queue is written now. */
        int64_t now = sm_now_ms();
        if (s->opt.idle_timeout_ms)
            expire_idle(s, now);
        flush_dirty(s);
        if (s->accept_paused && now >= s->accept_retry_at)
            set_accepting(s, 1);
    }
    close_all(s, SM_ESTOPPED);
    atomic_store(&s->stop_requested, 0);
    return rc;
}

SM_API void sm_server_stop(sm_server *s)
{
    if (!s)
        return;
    /* Only a lock-free atomic store and write(): async-signal-safe. */
    atomic_store(&s->stop_requested, 1);
    sm_poller_wake(s->poller);
}

/* ---- setup and the rest of the API ---- */

static int resolve_options(sm_server_options *dst, const sm_server_options *opts)
{
    static const sm_server_options defaults;
    *dst = opts ? *opts : defaults;
    if (dst->idle_timeout_ms < 0 || dst->max_conns < 0)
        return sm_error_set(SM_EINVAL, "server options: negative value");
    if (!dst->max_frame)
        dst->max_frame = SM_DEFAULT_MAX_FRAME;
    if (!dst->high_water)
        dst->high_water = 1024 * 1024;
    if (!dst->max_queue)
        dst->max_queue = dst->high_water + 2 * (size_t)dst->max_frame;
    return 0;
}

SM_API int sm_server_new(sm_server **out, const sm_server_handlers *handlers,
                         const sm_server_options *opts, void *arg)
{
    if (!out)
        return sm_error_set(SM_EINVAL, "sm_server_new: NULL argument");
    *out = NULL;
    sm_server *s = calloc(1, sizeof *s);
    if (!s)
        return sm_error_set(SM_ENOMEM, "sm_server_new");
    int rc = resolve_options(&s->opt, opts);
    if (rc) {
        free(s);
        return rc;
    }
    rc = sm_poller_new(&s->poller);
    if (rc) {
        free(s);
        return sm_error_set(rc, "sm_server_new: poller");
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

SM_API int sm_server_listen(sm_server *s, const char *addr)
{
    if (!s || !addr)
        return sm_error_set(SM_EINVAL, "sm_server_listen: NULL argument");
    sm_listener **list =
        realloc(s->listeners, (size_t)(s->listener_count + 1) * sizeof(sm_listener *));
    if (!list)
        return sm_error_set(SM_ENOMEM, "sm_server_listen");
    s->listeners = list;
    sm_listener *l;
    int rc = sm_listen(&l, addr);
    if (rc)
        return rc;
    int index = s->listener_count;
    rc = sm_poller_add(s->poller, sm_listener_fd(l), LISTENER_KEY | (uint64_t)index,
                       s->accept_paused ? 0 : SM_POLL_IN);
    if (rc) {
        sm_listener_close(l);
        return sm_error_set(rc, "sm_server_listen %s", addr);
    }
    s->listeners[s->listener_count++] = l;
    return index;
}

SM_API int sm_server_addr(const sm_server *s, int index, char *buf, size_t len)
{
    if (!s || index < 0 || index >= s->listener_count)
        return sm_error_set(SM_EINVAL, "sm_server_addr: no listener %d", index);
    return sm_listener_addr(s->listeners[index], buf, len);
}

/* The checks every send-like call makes on its arguments. */
static int check_send(const sm_server *s, const void *msg, size_t len, const char *what)
{
    if (!s || (!msg && len))
        return sm_error_set(SM_EINVAL, "%s: NULL argument", what);
    if (len > UINT32_MAX)
        return sm_error_set(SM_ETOOBIG, "%s: %zu bytes", what, len);
    return 0;
}

SM_API int sm_server_send(sm_server *s, sm_conn_id id, const void *msg, size_t len)
{
    int rc = check_send(s, msg, len, "sm_server_send");
    if (rc)
        return rc;
    struct client *c = find_open(s, id);
    return c ? enqueue(s, c, msg, len) : SM_ENOCONN;
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

SM_API int sm_server_post(sm_server *s, sm_conn_id id, const void *msg, size_t len)
{
    int rc = check_send(s, msg, len, "sm_server_post");
    if (rc)
        return rc;
    struct post *p = malloc(sizeof *p + len);
    if (!p)
        return sm_error_set(SM_ENOMEM, "sm_server_post");
    p->next = NULL;
    p->id = id;
    p->len = len;
    if (len)
        memcpy(p->msg, msg, len);
    pthread_mutex_lock(&s->post_lock);
    *s->posts_tail = p;
    s->posts_tail = &p->next;
    pthread_mutex_unlock(&s->post_lock);
    sm_poller_wake(s->poller);
    return 0;
}

SM_API int sm_server_disconnect(sm_server *s, sm_conn_id id)
{
    struct client *c = find_open(s, id);
    if (!c)
        return SM_ENOCONN;
    drain_and_close(s, c, 0);
    return 0;
}

SM_API int sm_server_set_data(sm_server *s, sm_conn_id id, void *data)
{
    struct client *c = s ? lookup(s, id) : NULL;
    if (!c)
        return sm_error_set(SM_ENOCONN, "connection %llu", (unsigned long long)id);
    c->data = data;
    return 0;
}

SM_API void *sm_server_data(const sm_server *s, sm_conn_id id)
{
    struct client *c = s ? lookup(s, id) : NULL;
    return c ? c->data : NULL;
}

SM_API int sm_server_peer(const sm_server *s, sm_conn_id id, char *buf, size_t len)
{
    struct client *c = s ? lookup(s, id) : NULL;
    if (!c)
        return sm_error_set(SM_ENOCONN, "connection %llu", (unsigned long long)id);
    if (!buf)
        return sm_error_set(SM_EINVAL, "sm_server_peer: NULL buffer");
    return sm_addr_of_fd(c->fd, 1, buf, len);
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
    return n;
}

SM_API void sm_server_get_stats(const sm_server *s, sm_server_stats *st)
{
    static const sm_server_stats none;
    if (st)
        *st = s ? s->stats : none;
}

SM_API void sm_server_free(sm_server *s)
{
    if (!s)
        return;
    close_all(s, SM_ESTOPPED);
    for (int i = 0; i < s->listener_count; i++)
        sm_listener_close(s->listeners[i]);
    free(s->listeners);
    take_posts(s); /* frees them: no client is left to queue to */
    sm_poller_free(s->poller);
    pthread_mutex_destroy(&s->post_lock);
    free(s->by_fd);
    free(s->dirty);
    free(s);
}
