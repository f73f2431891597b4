/* The event-driven server: driven by blocking clients and raw sockets. */
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WAIT_MS 5000
#define MAX_CLOSES 4096

/* A server in a thread.  Messages are commands:
 *   "whoami"          -> the sender's id, in decimal
 *   "to ID text"      -> "text" to client ID; the sender gets the rc
 *   "all text"        -> broadcast "text" to everyone but the sender
 *   "bye text"        -> "text" to the sender, then disconnect it
 *   "stats"           -> "conns accepted rejected accept_pauses"
 *   anything else     -> echoed back */
struct harness {
    sm_server *s;
    pthread_t thread;
    char addr[3][SM_ADDRSTRLEN];
    pthread_mutex_t lock;
    int close_reasons[MAX_CLOSES];
    sm_conn_id close_ids[MAX_CLOSES];
    int closes;
    atomic_int run_rc;
    atomic_int fill_rc;
};

static void reply(sm_server *s, sm_conn_id id, const char *text)
{
    sm_server_send(s, id, text, strlen(text));
}

/* "fill": queue 100 KiB messages to the sender until a send fails. */
static void fill(sm_server *s, sm_conn_id id, struct harness *h)
{
    static const char big[100 * 1024];
    int rc = 0;
    for (int i = 0; i < 10000 && rc == 0; i++)
        rc = sm_server_send(s, id, big, sizeof big);
    atomic_store(&h->fill_rc, rc);
}

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    char text[256];
    if (len >= sizeof text) {
        sm_server_send(s, id, msg, len);
        return;
    }
    memcpy(text, msg, len);
    text[len] = '\0';
    if (strcmp(text, "whoami") == 0) {
        snprintf(text, sizeof text, "%" PRIu64, id);
        reply(s, id, text);
    } else if (strncmp(text, "to ", 3) == 0) {
        char *rest;
        sm_conn_id to = strtoull(text + 3, &rest, 10);
        int rc = sm_server_send(s, to, rest + 1, strlen(rest + 1));
        snprintf(text, sizeof text, "rc %d", rc);
        reply(s, id, text);
    } else if (strncmp(text, "all ", 4) == 0) {
        sm_server_broadcast(s, text + 4, len - 4, id);
    } else if (strcmp(text, "stats") == 0) {
        sm_server_stats st;
        sm_server_get_stats(s, &st);
        snprintf(text, sizeof text, "%zu %llu %llu %llu", st.conns,
                 (unsigned long long)st.accepted, (unsigned long long)st.rejected,
                 (unsigned long long)st.accept_pauses);
        reply(s, id, text);
    } else if (strcmp(text, "fill") == 0) {
        fill(s, id, arg);
    } else if (strncmp(text, "bye ", 4) == 0) {
        reply(s, id, text + 4);
        sm_server_disconnect(s, id);
    } else {
        sm_server_send(s, id, msg, len);
    }
}

static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)s;
    struct harness *h = arg;
    pthread_mutex_lock(&h->lock);
    if (h->closes < MAX_CLOSES) {
        h->close_ids[h->closes] = id;
        h->close_reasons[h->closes] = reason;
    }
    h->closes++;
    pthread_mutex_unlock(&h->lock);
}

static void *run(void *arg)
{
    struct harness *h = arg;
    atomic_store(&h->run_rc, sm_server_run(h->s));
    return NULL;
}

static void setup(struct harness *h, const sm_server_options *o, const char *const *addrs)
{
    static const char *const one[] = { "127.0.0.1:0", NULL };
    sm_server_handlers handlers = { .on_message = on_message, .on_close = on_close };
    memset(h, 0, sizeof *h);
    atomic_init(&h->fill_rc, 1);
    pthread_mutex_init(&h->lock, NULL);
    cr_assert_eq(sm_server_new(&h->s, &handlers, o, h), 0);
    addrs = addrs ? addrs : one;
    for (int i = 0; addrs[i]; i++) {
        cr_assert_eq(sm_server_listen(h->s, addrs[i]), i, "%s: %s", addrs[i], sm_last_error());
        cr_assert_gt(sm_server_addr(h->s, i, h->addr[i], SM_ADDRSTRLEN), 0);
    }
}

static void start(struct harness *h, const sm_server_options *o, const char *const *addrs)
{
    setup(h, o, addrs);
    pthread_create(&h->thread, NULL, run, h);
}

static void finish(struct harness *h)
{
    sm_server_stop(h->s);
    pthread_join(h->thread, NULL);
    cr_assert_eq(atomic_load(&h->run_rc), 0);
    sm_server_free(h->s);
    pthread_mutex_destroy(&h->lock);
}

/* The reason the server gave when it closed id; 1 if not closed yet. */
static int reason_for(struct harness *h, sm_conn_id id)
{
    for (int waited = 0; waited < WAIT_MS; waited += 10) {
        pthread_mutex_lock(&h->lock);
        for (int i = 0; i < h->closes && i < MAX_CLOSES; i++)
            if (h->close_ids[i] == id) {
                int r = h->close_reasons[i];
                pthread_mutex_unlock(&h->lock);
                return r;
            }
        pthread_mutex_unlock(&h->lock);
        usleep(10000);
    }
    return 1;
}

static sm_conn *client(const char *addr)
{
    sm_options o = { .recv_timeout_ms = WAIT_MS, .send_timeout_ms = WAIT_MS };
    sm_conn *c;
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0, "%s", sm_last_error());
    return c;
}

static void expect(sm_conn *c, const char *want)
{
    char got[512];
    ssize_t n = sm_recv(c, got, sizeof got - 1);
    cr_assert_geq(n, 0, "waiting for '%s': %s", want, sm_last_error());
    got[n] = '\0';
    cr_assert_str_eq(got, want);
}

static void say(sm_conn *c, const char *text)
{
    cr_assert_eq(sm_send(c, text, strlen(text)), 0, "%s", sm_last_error());
}

/* The server's counters, read on its own thread. */
static sm_server_stats stats(sm_conn *c)
{
    char got[128];
    sm_server_stats st = { 0 };
    unsigned long long accepted = 0, rejected = 0, pauses = 0;
    if (sm_send(c, "stats", 5) == 0) {
        ssize_t n = sm_recv(c, got, sizeof got - 1);
        got[n > 0 ? n : 0] = '\0';
        sscanf(got, "%zu %llu %llu %llu", &st.conns, &accepted, &rejected, &pauses);
    }
    st.accepted = accepted;
    st.rejected = rejected;
    st.accept_pauses = pauses;
    return st;
}

static sm_conn_id whoami(sm_conn *c)
{
    char got[32];
    say(c, "whoami");
    ssize_t n = sm_recv(c, got, sizeof got - 1);
    cr_assert_gt(n, 0);
    got[n] = '\0';
    return strtoull(got, NULL, 10);
}

/* A well-behaved client still gets its echo, promptly. */
static void still_served(sm_conn *c)
{
    say(c, "ping");
    expect(c, "ping");
}

Test(server, thousand_clients_echo_at_once, .timeout = 60)
{
    enum { N = 1000, ROUNDS = 3 };
    struct harness h;
    start(&h, NULL, NULL);
    sm_conn **c = calloc(N, sizeof *c);
    for (int i = 0; i < N; i++)
        c[i] = client(h.addr[0]);
    char msg[64], got[64];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < N; i++) {
            int n = snprintf(msg, sizeof msg, "client %d round %d", i, r);
            cr_assert_eq(sm_send(c[i], msg, (size_t)n), 0);
        }
        for (int i = 0; i < N; i++) {
            int n = snprintf(msg, sizeof msg, "client %d round %d", i, r);
            cr_assert_eq(sm_recv(c[i], got, sizeof got), n, "%s", sm_last_error());
            cr_assert(memcmp(got, msg, (size_t)n) == 0);
        }
    }
    sm_server_stats st = stats(c[0]);
    cr_assert_eq(st.conns, N);
    cr_assert_eq(st.accepted, N);
    for (int i = 0; i < N; i++)
        sm_close(c[i]);
    free(c);
    finish(&h);
    cr_assert_eq(h.closes, N, "every on_close fired");
}

Test(server, several_listeners_one_server, .timeout = 20)
{
    char unix_addr[64];
    snprintf(unix_addr, sizeof unix_addr, "unix:/tmp/sockmsg-server-%d.sock", (int)getpid());
    const char *addrs[] = { "127.0.0.1:0", "[::1]:0", unix_addr, NULL };
    struct harness h;
    start(&h, NULL, addrs);
    cr_assert_str_eq(h.addr[2], unix_addr);
    cr_assert_eq(sm_server_addr(h.s, 3, h.addr[0], SM_ADDRSTRLEN), SM_EINVAL);
    for (int i = 0; i < 3; i++) {
        sm_conn *c = client(h.addr[i]);
        still_served(c);
        sm_close(c);
    }
    finish(&h);
}

Test(server, send_to_one_client_and_broadcast, .timeout = 20)
{
    struct harness h;
    start(&h, NULL, NULL);
    sm_conn *a = client(h.addr[0]), *b = client(h.addr[0]), *c = client(h.addr[0]);
    sm_conn_id ida = whoami(a), idb = whoami(b), idc = whoami(c);
    cr_assert(ida && idb && idc && ida != idb && idb != idc && ida != idc);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "to %" PRIu64 " just for b", idb);
    say(a, cmd);
    expect(a, "rc 0");
    expect(b, "just for b");
    say(c, "all hello others");
    expect(a, "hello others");
    expect(b, "hello others");
    /* c got nothing: its next message is its own echo. */
    still_served(c);
    still_served(a);

    sm_close(b);
    cr_assert_eq(reason_for(&h, idb), SM_ECLOSED);
    snprintf(cmd, sizeof cmd, "to %" PRIu64 " gone", idb);
    say(a, cmd);
    char want[16];
    snprintf(want, sizeof want, "rc %d", SM_ENOCONN);
    expect(a, want);
    sm_close(a);
    sm_close(c);
    finish(&h);
}

Test(server, ids_are_never_reused, .timeout = 30)
{
    enum { N = 300 };
    struct harness h;
    start(&h, NULL, NULL);
    static sm_conn_id ids[N];
    for (int i = 0; i < N; i++) {
        sm_conn *c = client(h.addr[0]);
        ids[i] = whoami(c);
        sm_close(c); /* its fd, and so its table slot, is reused next time */
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < i; j++)
            cr_assert_neq(ids[i], ids[j], "id %d repeats id %d", i, j);
    finish(&h);
}

Test(server, disconnect_sends_what_is_queued_first, .timeout = 20)
{
    struct harness h;
    start(&h, NULL, NULL);
    sm_conn *c = client(h.addr[0]);
    sm_conn_id id = whoami(c);
    say(c, "bye see you");
    expect(c, "see you");
    char buf[8];
    cr_assert_eq(sm_recv(c, buf, sizeof buf), SM_ECLOSED);
    cr_assert_eq(reason_for(&h, id), 0);
    sm_close(c);
    finish(&h);
}

/* ---- malformed streams close only that client ---- */

static void hostile(const void *bytes, size_t len, int linger_reset, int want_reason)
{
    struct harness h;
    sm_server_options o = { .max_frame = 1024 };
    start(&h, &o, NULL);
    sm_conn *good = client(h.addr[0]), *bad = client(h.addr[0]);
    sm_conn_id id = whoami(bad);
    cr_assert_eq(write(sm_conn_fd(bad), bytes, len), (ssize_t)len);
    if (linger_reset) {
        usleep(50000);
        struct linger lg = { 1, 0 };
        setsockopt(sm_conn_fd(bad), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        sm_close(bad);
    } else if (want_reason != SM_ETOOBIG) {
        sm_close(bad);
    }
    cr_assert_eq(reason_for(&h, id), want_reason, "reason %s", sm_strerror(reason_for(&h, id)));
    still_served(good);
    if (!linger_reset && want_reason == SM_ETOOBIG)
        sm_close(bad);
    sm_close(good);
    finish(&h);
}

Test(server, huge_header_closes_only_that_client, .timeout = 20)
{
    hostile("\xff\xff\xff\xff", 4, 0, SM_ETOOBIG);
}

Test(server, header_over_max_frame_closes_only_that_client, .timeout = 20)
{
    hostile("\0\0\4\1", 4, 0, SM_ETOOBIG);
}

Test(server, garbage_closes_only_that_client, .timeout = 20)
{
    hostile("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, 0, SM_ETOOBIG);
}

Test(server, truncated_frame_is_reported, .timeout = 20)
{
    hostile("\0\0\4\0abc", 7, 0, SM_ETRUNCATED);
}

Test(server, reset_mid_frame_is_reported, .timeout = 20)
{
    hostile("\0\0\4\0abc", 7, 1, -ECONNRESET);
}

Test(server, exactly_max_frame_is_accepted, .timeout = 20)
{
    struct harness h;
    sm_server_options o = { .max_frame = 1024 };
    start(&h, &o, NULL);
    sm_conn *c = client(h.addr[0]);
    char msg[1024], got[1024];
    memset(msg, 'm', sizeof msg);
    cr_assert_eq(sm_send(c, msg, sizeof msg), 0);
    cr_assert_eq(sm_recv(c, got, sizeof got), 1024);
    sm_close(c);
    finish(&h);
}

/* ---- limits ---- */

Test(server, idle_clients_time_out, .timeout = 20)
{
    struct harness h;
    sm_server_options o = { .idle_timeout_ms = 300 };
    start(&h, &o, NULL);
    sm_conn *idle = client(h.addr[0]), *busy = client(h.addr[0]);
    sm_conn_id idle_id = whoami(idle), busy_id = whoami(busy);
    for (int i = 0; i < 8; i++) {
        usleep(100000);
        still_served(busy);
    }
    cr_assert_eq(reason_for(&h, idle_id), SM_ETIMEDOUT);
    char buf[8];
    cr_assert_eq(sm_recv(idle, buf, sizeof buf), SM_ECLOSED);
    pthread_mutex_lock(&h.lock);
    for (int i = 0; i < h.closes; i++)
        cr_assert_neq(h.close_ids[i], busy_id, "the busy client stays");
    pthread_mutex_unlock(&h.lock);
    sm_close(idle);
    sm_close(busy);
    finish(&h);
}

Test(server, clients_beyond_max_conns_are_turned_away, .timeout = 20)
{
    struct harness h;
    sm_server_options o = { .max_conns = 2 };
    start(&h, &o, NULL);
    sm_conn *a = client(h.addr[0]), *b = client(h.addr[0]);
    still_served(a);
    still_served(b);
    sm_conn *c = client(h.addr[0]);
    char buf[8];
    sm_send(c, "ping", 4);
    ssize_t rc = sm_recv(c, buf, sizeof buf);
    cr_assert(rc == SM_ECLOSED || rc == -ECONNRESET, "%s", sm_strerror((int)rc));
    cr_assert_eq(stats(a).rejected, 1);
    sm_close(c);
    sm_close(a);
    sm_close(b);
    finish(&h);
}

/* A raw client that sends echo requests and never reads. */
static size_t flood(int fd, size_t total, int seconds)
{
    static char frame[4 + 65536];
    frame[0] = 0, frame[1] = 1, frame[2] = 0, frame[3] = 0; /* 65536 */
    size_t sent = 0;
    time_t end = time(NULL) + seconds;
    while (sent < total && time(NULL) < end) {
        ssize_t n = send(fd, frame, sizeof frame, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else
            usleep(1000);
    }
    return sent;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

Test(server, a_client_that_never_reads_cannot_grow_the_server, .timeout = 30)
{
    struct harness h;
    sm_server_options o = { .high_water = 256 * 1024 };
    start(&h, &o, NULL);
    sm_conn *good = client(h.addr[0]), *hog = client(h.addr[0]);
    still_served(good);
    long before = rss_kib();
    size_t sent = flood(sm_conn_fd(hog), 256u << 20, 3);
    long growth = rss_kib() - before;
    /* The kernel's buffers fill, then the server stops reading from it. */
    cr_assert_lt(sent, 64u << 20, "the server kept reading: %zu bytes taken", sent);
    /* Generous: AddressSanitizer keeps freed memory in quarantine. */
    cr_assert_lt(growth, 32 * 1024, "RSS grew %ld KiB", growth);
    still_served(good);
    sm_close(hog);
    sm_close(good);
    finish(&h);
}


Test(server, sends_beyond_max_queue_fail_with_efull, .timeout = 20)
{
    struct harness h;
    sm_server_options o = { .max_queue = 1 << 20, .high_water = 1 << 20 };
    start(&h, &o, NULL);
    sm_conn *c = client(h.addr[0]);
    say(c, "fill");
    for (int i = 0; i < 500 && atomic_load(&h.fill_rc) == 1; i++)
        usleep(10000);
    cr_assert_eq(atomic_load(&h.fill_rc), SM_EFULL, "%s", sm_strerror(atomic_load(&h.fill_rc)));
    /* What was queued (under 1 MiB) still arrives whole. */
    void *msg;
    cr_assert_eq(sm_recv_alloc(c, &msg), 100 * 1024);
    free(msg);
    sm_close(c);
    finish(&h);
}

static sm_server *signalled;
static void stop_on_signal(int sig)
{
    (void)sig;
    sm_server_stop(signalled);
}

Test(server, stop_from_a_signal_handler, .timeout = 20)
{
    struct harness h;
    start(&h, NULL, NULL);
    sm_conn *c = client(h.addr[0]);
    still_served(c);
    signalled = h.s;
    struct sigaction sa = { .sa_handler = stop_on_signal };
    sigaction(SIGUSR1, &sa, NULL);
    pthread_kill(h.thread, SIGUSR1);
    pthread_join(h.thread, NULL);
    cr_assert_eq(h.closes, 1);
    cr_assert_eq(h.close_reasons[0], SM_ESTOPPED);
    sm_close(c);
    /* Run again after a stop: it serves new clients. */
    pthread_create(&h.thread, NULL, run, &h);
    c = client(h.addr[0]);
    still_served(c);
    sm_close(c);
    finish(&h);
}

/* In a child with only 40 descriptors: the server runs out, pauses
 * accepting without spinning, and serves the waiting clients once others
 * leave.  Exits 0 if all went as it should. */
/* In a child: 24 clients wait in the backlog, then the descriptor limit
 * leaves the server room for only 4.  It must pause accepting without
 * spinning, and serve the waiting clients once others leave.  Exits 0 if
 * all went as it should, else the number of the step that failed. */
static int fd_exhaustion_child(void)
{
    struct harness h;
    setup(&h, NULL, NULL);
    sm_conn *c[24] = { 0 };
    int highest = 0;
    for (int i = 0; i < 24; i++) {
        if (sm_connect(&c[i], h.addr[0]) != 0)
            return 10;
        highest = sm_conn_fd(c[i]);
    }
    struct rlimit rl = { (rlim_t)highest + 1 + 4, (rlim_t)highest + 1 + 4 };
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 10;
    pthread_create(&h.thread, NULL, run, &h);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    usleep(1000000);
    getrusage(RUSAGE_SELF, &after);
    double cpu = (double)(after.ru_utime.tv_sec - before.ru_utime.tv_sec) +
                 (double)(after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
                 (double)(after.ru_utime.tv_usec - before.ru_utime.tv_usec) / 1e6 +
                 (double)(after.ru_stime.tv_usec - before.ru_stime.tv_usec) / 1e6;
    sm_server_stats st = stats(c[0]); /* the first clients were accepted */
    if (st.accept_pauses == 0)
        return 11;
    if (st.conns > 4)
        return 12;
    if (cpu > 0.3)
        return 13;
    /* Clients that left while still in the backlog are accepted and
     * dropped at once; after that the last one must be served. */
    for (int i = 0; i < 16; i++) {
        sm_close(c[i]);
        c[i] = NULL;
    }
    sm_options o = { .recv_timeout_ms = 3000 };
    sm_conn_set_options(c[23], &o);
    char buf[8];
    if (sm_send(c[23], "ping", 4) != 0 || sm_recv(c[23], buf, sizeof buf) != 4)
        return 14;
    for (int i = 0; i < 24; i++)
        sm_close(c[i]);
    sm_server_stop(h.s);
    pthread_join(h.thread, NULL);
    sm_server_free(h.s);
    return 0;
}

Test(server, out_of_descriptors_pauses_accepting, .timeout = 30)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(fd_exhaustion_child());
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "child failed step %d", WEXITSTATUS(status));
}

static long rss_of(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* The server runs in a child process, so its RSS is its own. */
Test(server, idle_connections_cost_little_memory, .timeout = 60)
{
    enum { N = 2000 };
    int pipe_fds[2];
    cr_assert_eq(pipe(pipe_fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct harness h;
        start(&h, NULL, NULL);
        if (write(pipe_fds[1], h.addr[0], SM_ADDRSTRLEN) != SM_ADDRSTRLEN)
            _exit(1);
        pthread_join(h.thread, NULL); /* until killed */
        _exit(0);
    }
    char addr[SM_ADDRSTRLEN];
    cr_assert_eq(read(pipe_fds[0], addr, sizeof addr), (ssize_t)sizeof addr);
    sm_conn **c = calloc(N + 1, sizeof *c);
    c[N] = client(addr);
    still_served(c[N]); /* one-time allocations happen here */
    long before = rss_of(pid);
    for (int i = 0; i < N; i++) {
        c[i] = client(addr);
        still_served(c[i]);
    }
    usleep(100000);
    double per_conn = (double)(rss_of(pid) - before) / N;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i <= N; i++)
        sm_close(c[i]);
    free(c);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    cr_log_info("server RSS per idle connection: %.3f KiB", per_conn);
    cr_assert_lt(per_conn, 1.0, "%.3f KiB per idle connection", per_conn);
}
