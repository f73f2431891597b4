/*
 * threaded-server - an echo server with one thread per client: every
 * message goes straight back to the client that sent it.
 *
 *     ./threaded-server 127.0.0.1:0        (default ":29876")
 *     ./threaded-server --idle 5000 127.0.0.1:0
 *
 * echo-server does the same job in one thread for all clients, with the
 * event-driven sm_server: it never blocks, so it holds thousands of
 * clients cheaply, but its code must be written as handlers.  Here each
 * client gets a thread of its own running the plain blocking calls
 * (sm_recv, then sm_send, in a loop), which reads like the tutorial - at
 * the cost of a thread (memory, a stack) per client, and of sharing data
 * between threads carefully (a mutex here).
 *
 * At most MAX_THREADS clients are served at once.  Further clients WAIT:
 * the server stops accepting until a thread finishes, so new clients
 * stay queued by the operating system (their connect succeeds, their
 * messages are answered once a thread is free).
 *
 * So that clients which connect and then say nothing cannot keep every
 * thread, a client that sends no whole message for IDLE_MS milliseconds
 * (30 s; --idle MS changes it, --idle 0 means never) is disconnected, and
 * its thread serves the next client.  This stops accidents, not attacks:
 * a client that keeps sending still holds its thread.
 *
 * Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly: the server stops
 * accepting, every client thread notices within POLL_MS, closes its
 * client and ends, and the server waits (at most SHUTDOWN_MS) for them.
 */
#include <pthread.h>
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64
#define POLL_MS 200      /* how often blocked threads look at `stopping` */
#define SHUTDOWN_MS 5000 /* longest wait for client threads at the end */
#define IDLE_MS 30000    /* default: disconnect a client silent this long */

/* --idle MS: how long a client may stay silent (0: forever).  Set once,
 * before any thread starts, so every thread may read it. */
static long idle_ms = IDLE_MS;

/* The largest message we echo.  Keeping it within SM_RECV_BUFFER means an
 * sm_recv that times out never loses half a message: the next call simply
 * resumes. */
#define MAX_MESSAGE SM_RECV_BUFFER

/* Set by the signal handler, read by every thread.  An atomic variable is
 * safe for both (a plain int shared between threads is not). */
static atomic_int stopping;

/* How many client threads are running.  `lock` guards it; `changed` is
 * signalled each time a thread ends. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int running;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stopping, 1);
}

/* The time ms milliseconds from now, for pthread_cond_timedwait. */
static struct timespec in_ms(long ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Milliseconds since some fixed moment: for measuring how long a client
 * has been silent. */
static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One of these runs for each client, in its own thread. */
static void *serve_client(void *arg)
{
    sm_conn *conn = arg;
    char *msg = malloc(MAX_MESSAGE);
    long long last_message = now_ms();

    while (msg && !atomic_load(&stopping)) {
        ssize_t len = sm_recv(conn, msg, MAX_MESSAGE);
        if (len == SM_ETIMEDOUT) {
            /* Nothing for POLL_MS.  Silent too long?  Then let it go, so
             * that its thread can serve someone else. */
            if (idle_ms > 0 && now_ms() - last_message >= idle_ms)
                break;
            continue; /* check `stopping`, wait again */
        }
        if (len < 0) {
            /* SM_ECLOSED is the client saying goodbye; anything else is
             * worth a line in the log. */
            if (len != SM_ECLOSED)
                fprintf(stderr, "threaded-server: %s\n", sm_last_error());
            break;
        }
        if (sm_send(conn, msg, (size_t)len) < 0) {
            fprintf(stderr, "threaded-server: %s\n", sm_last_error());
            break;
        }
        last_message = now_ms();
    }
    free(msg);
    sm_close(conn);

    pthread_mutex_lock(&lock);
    running--;
    pthread_cond_signal(&changed); /* wake main: a place is free */
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv)
{
    /* threaded-server [--idle MS] [ADDR] */
    if (argc >= 3 && strcmp(argv[1], "--idle") == 0) {
        char *end;
        idle_ms = strtol(argv[2], &end, 10);
        if (*end || end == argv[2] || idle_ms < 0) {
            fprintf(stderr, "threaded-server: --idle takes milliseconds, not '%s'\n", argv[2]);
            return 2;
        }
        argv += 2;
        argc -= 2;
    }
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        int help = strcmp(argv[1], "--help") == 0;
        fprintf(help ? stdout : stderr,
                "usage: threaded-server [--idle MS] [ADDR]\n"
                "  ADDR      where to listen (default :29876)\n"
                "  --idle MS disconnect clients silent for MS milliseconds\n"
                "            (default %d; 0: never)\n",
                IDLE_MS);
        return help ? 0 : 2;
    }
    const char *addr = argc > 1 ? argv[1] : ":29876";
    /* Accepted connections inherit these options.  The timeouts make
     * sm_accept and sm_recv return every POLL_MS, so no thread sleeps
     * through a shutdown; send_timeout_ms gives up on a client that stops
     * reading our replies. */
    sm_options options = { .accept_timeout_ms = POLL_MS,
                           .recv_timeout_ms = POLL_MS,
                           .send_timeout_ms = 2000,
                           .max_frame = MAX_MESSAGE };
    sm_listener *listener;
    char where[SM_ADDRSTRLEN];

    if (sm_listen_opts(&listener, addr, &options) < 0) {
        fprintf(stderr, "threaded-server: %s\n", sm_last_error());
        return 1;
    }

    /* Catch signals before saying we are ready. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sm_listener_addr(listener, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout);

    while (!atomic_load(&stopping)) {
        /* All MAX_THREADS busy?  Wait until one ends (or a signal). */
        pthread_mutex_lock(&lock);
        while (running >= MAX_THREADS && !atomic_load(&stopping)) {
            struct timespec until = in_ms(POLL_MS);
            pthread_cond_timedwait(&changed, &lock, &until);
        }
        pthread_mutex_unlock(&lock);
        if (atomic_load(&stopping))
            break;

        sm_conn *conn;
        int rc = sm_accept(listener, &conn);
        if (rc == SM_ETIMEDOUT)
            continue; /* nobody came within POLL_MS: check `stopping` */
        if (rc < 0) {
            /* E.g. out of file descriptors: say so, pause, try again. */
            fprintf(stderr, "threaded-server: %s\n", sm_last_error());
            nanosleep(&(struct timespec){ .tv_nsec = 100000000L }, NULL);
            continue;
        }

        pthread_mutex_lock(&lock);
        running++;
        pthread_mutex_unlock(&lock);
        /* A detached thread cleans up after itself when it ends: nobody
         * needs to pthread_join it.  We count it in `running` instead. */
        pthread_t thread;
        if (pthread_create(&thread, NULL, serve_client, conn) != 0) {
            fprintf(stderr, "threaded-server: cannot start a thread\n");
            sm_close(conn);
            pthread_mutex_lock(&lock);
            running--;
            pthread_mutex_unlock(&lock);
            continue;
        }
        pthread_detach(thread);
    }

    /* Shutting down: accept nobody new, then give the client threads
     * SHUTDOWN_MS to notice `stopping` and end. */
    sm_listener_close(listener);
    struct timespec until = in_ms(SHUTDOWN_MS);
    pthread_mutex_lock(&lock);
    int timed_out = 0;
    while (running > 0 && !timed_out)
        timed_out = pthread_cond_timedwait(&changed, &lock, &until) != 0;
    int left = running;
    pthread_mutex_unlock(&lock);
    if (left > 0) {
        fprintf(stderr, "threaded-server: %d clients did not finish\n", left);
        return 1;
    }
    return 0;
}
