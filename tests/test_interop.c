/*
 * The wire format against an independent implementation: tests/peer.py,
 * plain Python 3 written from docs/PROTOCOL.md, runs as a child process.
 * Python serves and C connects, C serves and Python connects, over IPv4
 * and IPv6, with messages around every size boundary the library has
 * (empty, one byte, SM_RECV_BUFFER and one past it, 1 MiB).
 *
 * Tests run from the repository root (make check does).  Every wait is
 * bounded, and a child a failed test leaves behind is killed by its PID.
 */
#include "support/support.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PEER "tests/peer.py"
#define PEER_WAIT_MS 10000 /* generous: sanitizer builds and Python start slowly */

/* ---- child processes ---- */

TestSuite(interop, .timeout = 30, .fini = kill_tracked_children);

/* Starts `python3 tests/peer.py args...` with stdin from /dev/null and
 * stdout and stderr to pipes. */
static struct child start_peer(const char *const args[])
{
    cr_assert_eq(access(PEER, R_OK), 0, PEER ": %s (run the tests from the repository root)",
                 strerror(errno));
    const char *argv[8] = { "python3", PEER };
    size_t n = 2;
    for (size_t i = 0; args[i]; i++) {
        cr_assert(n + 1 < sizeof argv / sizeof argv[0]);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return spawn_child(argv, NULL, 0, 1);
}

/* Waits at most timeout_ms for the child to exit and returns its wait
 * status; if it does not, kills it by PID, reaps it and returns -1. */
static int wait_child(struct child *c, int timeout_ms)
{
    int status = -1;
    int exited = reap(c->pid, timeout_ms, &status);
    c->pid = 0;
    return exited ? status : -1;
}

/* Waits for the child, collects its stdout and stderr and closes the
 * pipes; asserts it exited with `code`. */
static void finish(struct child *c, int code, char *out, size_t out_cap)
{
    char err[1024];
    read_all(c->out, out, out_cap, PEER_WAIT_MS);
    read_all(c->err, err, sizeof err, PEER_WAIT_MS);
    close(c->out);
    close(c->err);
    int status = wait_child(c, PEER_WAIT_MS);
    cr_assert(status != -1, "peer.py did not exit in time; stderr: %s", err);
    cr_assert(WIFEXITED(status), "peer.py died of signal %d; stderr: %s",
              WIFSIGNALED(status) ? WTERMSIG(status) : 0, err);
    cr_assert_eq(WEXITSTATUS(status), code, "peer.py exited %d, expected %d; stderr: %s",
                 WEXITSTATUS(status), code, err);
}

/* ---- messages ---- */

static const sm_options patient = {
    .connect_timeout_ms = PEER_WAIT_MS,
    .accept_timeout_ms = PEER_WAIT_MS,
    .send_timeout_ms = PEER_WAIT_MS,
    .recv_timeout_ms = PEER_WAIT_MS,
};

/* ---- Python serves, C connects ---- */

/* Starts `peer.py serve listen_addr` and returns the address it printed,
 * which must begin with want_prefix. */
static struct child python_server(const char *listen_addr, const char *want_prefix,
                                  char addr[SM_ADDRSTRLEN])
{
    const char *args[] = { "serve", listen_addr, NULL };
    struct child py = start_peer(args);
    char line[SM_ADDRSTRLEN + 32];
    if (read_line(py.out, line, sizeof line, PEER_WAIT_MS) < 0) {
        char err[1024];
        read_all(py.err, err, sizeof err, 1000);
        cr_assert_fail("peer.py serve %s printed no listening line; stderr: %s", listen_addr, err);
    }
    size_t pre = strlen("listening on ");
    cr_assert(strncmp(line, "listening on ", pre) == 0, "peer.py printed '%s'", line);
    cr_assert(strlen(line + pre) < SM_ADDRSTRLEN, "'%s'", line);
    strcpy(addr, line + pre);
    cr_assert(strncmp(addr, want_prefix, strlen(want_prefix)) == 0, "'%s'", addr);
    cr_assert(atoi(addr + strlen(want_prefix)) > 0, "no port chosen: '%s'", addr);
    return py;
}

static void python_echoes_c(const char *listen_addr, const char *want_prefix)
{
    char addr[SM_ADDRSTRLEN];
    struct child py = python_server(listen_addr, want_prefix, addr);
    sm_conn *c;
    int rc = sm_connect_opts(&c, addr, &patient);
    cr_assert_eq(rc, 0, "connect %s: %s", addr, sm_last_error());

    /* One at a time, around each size the receiver treats differently. */
    static const size_t sizes[] = {
        0, 1, 4096, SM_RECV_BUFFER - 4, SM_RECV_BUFFER, SM_RECV_BUFFER + 1, 1u << 20
    };
    size_t nsizes = sizeof sizes / sizeof sizes[0];
    for (size_t i = 0; i < nsizes; i++) {
        uint8_t *msg = patterned(sizes[i], (unsigned)i);
        cr_assert_eq(sm_send(c, msg, sizes[i]), 0, "send %zu bytes: %s", sizes[i], sm_last_error());
        void *back;
        ssize_t n = sm_recv_alloc(c, &back);
        cr_assert_eq(n, (ssize_t)sizes[i], "echo of %zu bytes: %zd (%s)", sizes[i], n,
                     sm_last_error());
        cr_assert_not_null(back, "even an empty message is allocated");
        cr_assert(memcmp(back, msg, sizes[i]) == 0, "echo of %zu bytes differs", sizes[i]);
        free(back);
        free(msg);
    }

    /* 100 small messages back to back before reading any echo: Python
     * must split them, and the echoes arrive several to a read here. */
    enum { BURST = 100 };
    for (unsigned i = 0; i < BURST; i++) {
        uint8_t *msg = patterned(i, 1000 + i);
        cr_assert_eq(sm_send(c, msg, i), 0, "burst send %u: %s", i, sm_last_error());
        free(msg);
    }
    for (unsigned i = 0; i < BURST; i++) {
        uint8_t buf[BURST], *want = patterned(i, 1000 + i);
        ssize_t n = sm_recv(c, buf, sizeof buf);
        cr_assert_eq(n, (ssize_t)i, "burst echo %u: %zd (%s)", i, n, sm_last_error());
        cr_assert(memcmp(buf, want, i) == 0, "burst echo %u differs", i);
        free(want);
    }
    cr_assert_eq(sm_recv_ready(c), 0, "nothing beyond the echoes");

    /* Closing between frames is a clean end for Python: it exits 0 and
     * counted exactly the frames we sent. */
    sm_close(c);
    char out[64];
    char err[1024];
    read_all(py.err, err, sizeof err, PEER_WAIT_MS);
    int status = wait_child(&py, PEER_WAIT_MS);
    read_all(py.out, out, sizeof out, 1000);
    close(py.out);
    close(py.err);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "peer.py serve: status %d; stderr: %s", status, err);
    char want[32];
    snprintf(want, sizeof want, "echoed %zu\n", nsizes + BURST);
    cr_assert(strstr(err, want), "peer.py did not see exactly %zu frames; stderr: %s",
              nsizes + BURST, err);
    cr_assert_str_empty(out, "nothing after the listening line");
}

Test(interop, python_server_echoes_c_client_ipv4)
{
    python_echoes_c("127.0.0.1:0", "127.0.0.1:");
}

Test(interop, python_server_echoes_c_client_ipv6)
{
    python_echoes_c("[::1]:0", "[::1]:");
}

/* ---- C serves, Python connects ---- */

/* Listens on listen_addr with max_frame (0: default), runs `peer.py client
 * ADDR count`, echoes until the connection ends.  Returns how many
 * messages were echoed; *end is the receive result that ended the loop. */
static int c_echoes_python(const char *listen_addr, uint32_t max_frame, int count, struct child *py,
                           ssize_t *end)
{
    sm_options o = patient;
    o.max_frame = max_frame;
    sm_listener *l;
    int rc = sm_listen_opts(&l, listen_addr, &o);
    cr_assert_eq(rc, 0, "listen %s: %s", listen_addr, sm_last_error());
    char addr[SM_ADDRSTRLEN];
    cr_assert_gt(sm_listener_addr(l, addr, sizeof addr), 0);

    char n[16];
    snprintf(n, sizeof n, "%d", count);
    const char *args[] = { "client", addr, n, NULL };
    *py = start_peer(args);

    sm_conn *c;
    rc = sm_accept(l, &c);
    if (rc != 0) {
        char why[256], err[1024];
        snprintf(why, sizeof why, "%s", sm_last_error());
        kill(py->pid, SIGKILL);
        read_all(py->err, err, sizeof err, 1000);
        cr_assert_fail("accept: %s; peer.py stderr: %s", why, err);
    }
    sm_listener_close(l);

    int echoed = 0;
    for (int i = 0; i <= count; i++) { /* at most count messages, then the end */
        void *msg;
        ssize_t len = sm_recv_alloc(c, &msg);
        if (len < 0) {
            cr_assert_null(msg);
            *end = len;
            break;
        }
        rc = sm_send(c, msg, (size_t)len);
        free(msg);
        cr_assert_eq(rc, 0, "echo %d: %s", i, sm_last_error());
        echoed++;
    }
    sm_close(c);
    return echoed;
}

static void python_client_checks_c_echo(const char *listen_addr)
{
    struct child py;
    ssize_t end = 0;
    int echoed = c_echoes_python(listen_addr, 0, 12, &py, &end);
    char out[64];
    finish(&py, 0, out, sizeof out);
    cr_assert_eq(end, SM_ECLOSED, "the loop ended with %zd (%s), not a clean close", end,
                 sm_strerror((int)end));
    cr_assert_eq(echoed, 12);
    cr_assert_str_eq(out, "ok 12\n");
}

Test(interop, c_server_echoes_python_client_ipv4)
{
    python_client_checks_c_echo("127.0.0.1:0");
}

Test(interop, c_server_echoes_python_client_ipv6)
{
    python_client_checks_c_echo("[::1]:0");
}

/* Python's sizes cycle 0, 1, 100, 4096, 70000, 1048576.  With a maximum
 * frame of exactly 70000 the first five are accepted and the sixth's
 * header is refused: SM_ETOOBIG, the connection is dropped, Python fails. */
Test(interop, python_frame_over_max_frame_is_refused)
{
    struct child py;
    ssize_t end = 0;
    int echoed = c_echoes_python("127.0.0.1:0", 70000, 12, &py, &end);
    char out[64];
    finish(&py, 1, out, sizeof out);
    cr_assert_eq(end, SM_ETOOBIG, "the loop ended with %zd (%s)", end, sm_strerror((int)end));
    cr_assert_eq(echoed, 5);
    cr_assert_str_empty(out, "peer.py must not report success");
}
