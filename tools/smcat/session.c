/* smcat: one connection (see smcat.h).  Two threads: this one receives
 * and prints, a sender thread sends, so that a peer that answers as it
 * reads never deadlocks against us. */
#include "smcat.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct session {
    const struct config *cfg;
    sm_conn *conn;
    char peer[SM_ADDRSTRLEN];
    int stop[2];             /* readable once the session is ending */
    atomic_bool stopping;    /* main thread ended the session */
    atomic_bool send_failed; /* sender ended it: its error wins */
    int send_code;
    char send_error[300];
    uint64_t sent, received;
    int stdout_errno; /* writing what arrived failed */
};

static void request_stop(struct session *s)
{
    if (write(s->stop[1], "x", 1) < 0) {
        /* The pipe is only ever written once or twice: it cannot be full. */
    }
}

/* Waits between messages; false if the session ended meanwhile. */
static bool pause_ms(struct session *s, int ms)
{
    struct pollfd pfd = { s->stop[0], POLLIN, 0 };
    int64_t end = now_ms() + ms;
    for (int64_t left = ms; left > 0; left = end - now_ms()) {
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return false;
        if (n < 0 && errno != EINTR)
            break;
    }
    return true;
}

/* Returns 0, or an exit code with s->send_error filled (-1: stopped). */
static int send_one(struct session *s, const void *msg, size_t len)
{
    const struct config *cfg = s->cfg;
    if (s->sent > 0 && cfg->interval_ms > 0 && !pause_ms(s, cfg->interval_ms))
        return -1;
    int rc = sm_send(s->conn, msg, len);
    if (rc < 0) {
        if (atomic_load(&s->stopping))
            return -1;
        snprintf(s->send_error, sizeof s->send_error, "%s", sm_last_error());
        return exit_for(rc);
    }
    s->sent++;
    atomic_fetch_add(&bytes_out, len);
    return 0;
}

/* Sends stdin as it is read, so interactive lines go out as typed. */
static int send_stream(struct session *s)
{
    struct reader *r = reader_new(STDIN_FILENO, s->stop[0]);
    if (!r) {
        snprintf(s->send_error, sizeof s->send_error, "out of memory");
        return EXIT_FAIL;
    }
    struct buf b = { 0 };
    struct input_error e = { 0, "" };
    int rc, code = 0;
    while ((rc = next_message(s->cfg, r, &b, &e)) == NEXT_MSG)
        if ((code = send_one(s, b.p, b.len)) != 0)
            break;
    if (rc == READ_STOPPED)
        code = -1;
    else if (rc < 0) {
        snprintf(s->send_error, sizeof s->send_error, "stdin: %s", e.text);
        code = e.code;
    }
    free(b.p);
    free(r);
    return code;
}

/* Returns 0, -1 (stopped) or an exit code with s->send_error filled. */
static int send_all(struct session *s)
{
    const struct config *cfg = s->cfg;
    if (cfg->stdin_streamed)
        return send_stream(s);
    for (unsigned long round = 0; round < cfg->count; round++)
        for (size_t i = 0; i < cfg->nmsgs; i++) {
            int code = send_one(s, cfg->msgs[i].data, cfg->msgs[i].len);
            if (code)
                return code;
        }
    return 0;
}

static void *sender_main(void *arg)
{
    struct session *s = arg;
    int fd = sm_conn_fd(s->conn);
    int code = send_all(s);
    if (code == 0 && s->cfg->half_close) {
        /* Half-close: the peer sees a clean end between frames and can
         * finish, while replies still flow our way.  No frame is held
         * back (we never use SM_MORE), so nothing is lost.  Only on
         * request: a server that ends the conversation at the end of our
         * input would drop replies it is still preparing. */
        shutdown(fd, SHUT_WR);
    } else if (code > 0) {
        s->send_code = code;
        atomic_store(&s->send_failed, true);
        /* Wake the receiving thread: the session is over. */
        shutdown(fd, SHUT_RDWR);
    }
    return NULL;
}

/* receive_loop's result when stdout, not the connection, failed. */
#define RECV_STDOUT_FAILED 1

/* Prints messages until the peer closes, --expect is met or an error.
 * Returns 0 (done), the receive error, or RECV_STDOUT_FAILED. */
static int receive_loop(struct session *s)
{
    const struct config *cfg = s->cfg;
    for (;;) {
        if (cfg->expect >= 0 && s->received >= (uint64_t)cfg->expect)
            return 0;
        const void *msg;
        ssize_t n = sm_recv_view(s->conn, &msg);
        if (n < 0)
            return (int)n;
        s->received++;
        atomic_fetch_add(&bytes_in, (uint64_t)n);
        errno = 0; /* so a stdio failure below reports its own cause */
        write_message(cfg->out, msg, (size_t)n, s->received);
        /* Flush only when no further message is already buffered: one
         * write per burst, yet every message shows up as it arrives. */
        if ((!sm_recv_ready(s->conn) && fflush(stdout) != 0) || ferror(stdout)) {
            s->stdout_errno = errno ? errno : EIO;
            return RECV_STDOUT_FAILED;
        }
    }
}

/* Turns how receiving ended into an exit code, with a message. */
static int receive_result(struct session *s, int rc)
{
    const struct config *cfg = s->cfg;
    if (rc == 0)
        return EXIT_OK;
    if (rc == RECV_STDOUT_FAILED)
        return complain(EXIT_FAIL, "stdout: %s", strerror(s->stdout_errno));
    if (rc == SM_ECLOSED) {
        if (cfg->expect > 0 && s->received < (uint64_t)cfg->expect)
            return complain(EXIT_FAIL,
                            "%s closed the connection after %llu of %ld "
                            "expected messages",
                            s->peer, (unsigned long long)s->received, cfg->expect);
        return EXIT_OK;
    }
    if (rc == SM_ETIMEDOUT)
        return complain(EXIT_TIMEOUT, "no message from %s for %d ms (--recv-timeout)", s->peer,
                        cfg->recv_timeout_ms);
    return complain(exit_for(rc), "%s", sm_last_error());
}

/* Ends the session from this side: the sender stops wherever it is. */
static void stop_sender(struct session *s)
{
    atomic_store(&s->stopping, true);
    request_stop(s);
    shutdown(sm_conn_fd(s->conn), SHUT_RDWR);
}

static int run_two_way(struct session *s)
{
    pthread_t sender;
    if (pthread_create(&sender, NULL, sender_main, s) != 0)
        return complain(EXIT_FAIL, "cannot start the sending thread");
    int rc = receive_loop(s);
    /* The peer closing ends only its direction: ours runs to the end. */
    if (rc != SM_ECLOSED || atomic_load(&s->send_failed))
        stop_sender(s);
    pthread_join(sender, NULL);
    if (atomic_load(&s->send_failed))
        return complain(s->send_code, "%s", s->send_error);
    return receive_result(s, rc);
}

static int run_send_only(struct session *s)
{
    int code = send_all(s);
    if (code > 0)
        return complain(code, "%s", s->send_error);
    return EXIT_OK;
}

int run_session(const struct config *cfg, sm_conn *conn, const char *how)
{
    struct session s = { .cfg = cfg, .conn = conn };
    atomic_init(&s.stopping, false);
    atomic_init(&s.send_failed, false);
    if (sm_conn_peer(conn, s.peer, sizeof s.peer) < 0)
        snprintf(s.peer, sizeof s.peer, "peer");
    if (cfg->verbose)
        complain(0, "%s %s", how, s.peer);
    char subject[256];
    if (cfg->verbose && cfg->tls_on) {
        if (sm_conn_peer_cert(conn, subject, sizeof subject) > 0)
            complain(0, "TLS with %s: verified certificate %s", s.peer, subject);
        else
            complain(0, "TLS with %s: no verified certificate", s.peer);
    }
    if (pipe(s.stop) < 0) {
        sm_close(conn);
        return complain(EXIT_FAIL, "pipe: %s", strerror(errno));
    }
    struct progress prog;
    progress_start(&prog, cfg, s.stop[0]);
    int code = cfg->no_wait ? run_send_only(&s) : run_two_way(&s);
    request_stop(&s);
    progress_finish(&prog);
    if (cfg->verbose)
        complain(0, "disconnected from %s (sent %llu, received %llu messages)", s.peer,
                 (unsigned long long)s.sent, (unsigned long long)s.received);
    sm_close(conn);
    close(s.stop[0]);
    close(s.stop[1]);
    return code;
}
