/*
 * Connections over any byte stream: sm_conn_adopt on socketpairs, pipe
 * pairs and a serial port (a pseudo-terminal in raw mode stands in for
 * one), and sockets handed to the event server: sm_server_adopt,
 * sm_server_listen_fd and systemd socket activation.
 */
#include "support/support.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* A message of len bytes from a to b, sent from a thread and received
 * with sm_recv_alloc: tests/support's trip checks every byte. */
static void pass(sm_conn *a, sm_conn *b, size_t len, unsigned seed)
{
    trip(a, b, len, 1, seed, "adopted");
}

static void round_trips(sm_conn *a, sm_conn *b)
{
    static const size_t sizes[] = { 0, 1, 255, 70000, 1u << 20 };
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        pass(a, b, sizes[i], i);
        pass(b, a, sizes[i], i + 100);
    }
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

Test(adopt, socketpair_carries_whole_messages)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sm_conn *a, *b;
    cr_assert_eq(sm_conn_adopt(&a, sv[0], sv[0], NULL), 0, "%s", sm_last_error());
    cr_assert_eq(sm_conn_adopt(&b, sv[1], sv[1], NULL), 0, "%s", sm_last_error());
    cr_expect(fcntl(sv[0], F_GETFD) & FD_CLOEXEC, "made close-on-exec");
    round_trips(a, b);
    sm_close(a);
    cr_expect_eq(sm_recv(b, NULL, 0), SM_ECLOSED, "the peer's close is seen");
    cr_expect_not(is_open(sv[0]), "sm_close closed the adopted fd");
    sm_close(b);
}

Test(adopt, pipe_pair_carries_whole_messages_and_never_raises_sigpipe)
{
    int ab[2], ba[2];
    cr_assert_eq(pipe(ab), 0);
    cr_assert_eq(pipe(ba), 0);
    sm_conn *a, *b;
    cr_assert_eq(sm_conn_adopt(&a, ba[0], ab[1], NULL), 0, "%s", sm_last_error());
    cr_assert_eq(sm_conn_adopt(&b, ab[0], ba[1], NULL), 0, "%s", sm_last_error());
    round_trips(a, b);
    /* A receive timeout works on a pipe too, and loses nothing. */
    sm_options o = { .recv_timeout_ms = 50 };
    sm_conn_set_options(b, &o);
    char buf[8];
    cr_expect_eq(sm_recv(b, buf, sizeof buf), SM_ETIMEDOUT);
    pass(a, b, 5, 7);
    /* b goes away: a's next send fails with EPIPE, and this process,
     * with SIGPIPE at its default (terminate), lives on. */
    signal(SIGPIPE, SIG_DFL);
    sm_close(b);
    int rc = sm_send(a, "x", 1);
    cr_expect_eq(rc, -EPIPE, "send to a pipe nobody reads: %d %s", rc, sm_last_error());
    cr_expect_eq(sm_recv(a, buf, sizeof buf), SM_ECLOSED);
    sm_close(a);
    cr_expect_not(is_open(ab[1]), "both fds of a pipe pair are closed");
    cr_expect_not(is_open(ba[0]));
}

Test(adopt, serial_port_in_raw_mode_carries_every_byte_value)
{
    /* A pseudo-terminal: the master is the device on the other end of the
     * cable, the slave is the port a program opens. */
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    cr_assert_geq(master, 0);
    cr_assert_eq(grantpt(master), 0);
    cr_assert_eq(unlockpt(master), 0);
    int port = open(ptsname(master), O_RDWR | O_NOCTTY);
    cr_assert_geq(port, 0);
    struct termios raw;
    cr_assert_eq(tcgetattr(port, &raw), 0);
    cfmakeraw(&raw);
    cr_assert_eq(tcsetattr(port, TCSANOW, &raw), 0);
    sm_conn *device, *program;
    cr_assert_eq(sm_conn_adopt(&device, master, master, NULL), 0, "%s", sm_last_error());
    cr_assert_eq(sm_conn_adopt(&program, port, port, NULL), 0, "%s", sm_last_error());
    uint8_t every[256];
    for (int i = 0; i < 256; i++)
        every[i] = (uint8_t)i;
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(sm_send(program, every, sizeof every), 0, "%s", sm_last_error());
        cr_assert_eq(sm_send(program, "", 0), 0);
        uint8_t got[256];
        cr_assert_eq(sm_recv(device, got, sizeof got), 256, "%s", sm_last_error());
        cr_assert_arr_eq(got, every, sizeof every, "no byte translated or lost");
        cr_assert_eq(sm_recv(device, got, sizeof got), 0, "the empty message");
    }
    pass(device, program, 3000, 9);
    sm_close(program);
    sm_close(device);
}

Test(adopt, bad_descriptors_are_errors_and_stay_the_callers)
{
    sm_conn *c = (sm_conn *)1;
    cr_expect_eq(sm_conn_adopt(&c, -1, -1, NULL), SM_EINVAL);
    cr_expect_null(c);
    cr_expect_eq(sm_conn_adopt(NULL, 0, 0, NULL), SM_EINVAL);
    int p[2], sv[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_expect_eq(sm_conn_adopt(&c, sv[0], p[1], NULL), SM_EINVAL, "a socket with a pipe");
    cr_expect(is_open(sv[0]) && is_open(p[1]), "a failed adopt leaves the fds open");
    close(p[1]);
    int rc = sm_conn_adopt(&c, p[1], p[1], NULL);
    cr_expect_eq(rc, -EBADF, "a closed fd: %d", rc);
    sm_options bad = { .recv_timeout_ms = -1 };
    cr_expect_eq(sm_conn_adopt(&c, sv[0], sv[0], &bad), SM_EINVAL);
    close(p[0]);
    close(sv[0]);
    close(sv[1]);
}

/* ---- the event server ---- */

static void expect_echo(sm_conn *c)
{
    send_text(c, "hello");
    expect_text(c, "hello");
}

/* c, connected to s, gets its echo while s runs on a thread; then c is
 * closed and s stopped and freed. */
static void echo_through(sm_server *s, sm_conn *c)
{
    struct idle_srv x;
    pthread_t t;
    idle_start(&x, s, &t);
    expect_echo(c);
    sm_close(c);
    sm_server_stop(s);
    pthread_join(t, NULL);
    sm_server_free(s);
}

Test(adopt, server_serves_a_socket_it_is_given)
{
    sm_server_handlers h = { .on_message = echo_message };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, NULL, NULL), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sm_conn_id id = 0;
    cr_assert_eq(sm_server_adopt(s, sv[1], &id), 0, "%s", sm_last_error());
    cr_expect_neq(id, 0);
    cr_expect(fcntl(sv[1], F_GETFL) & O_NONBLOCK, "made non-blocking");
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_expect_eq(sm_server_adopt(s, p[0], NULL), -ENOTSOCK, "a pipe is no socket");
    cr_expect(is_open(p[0]), "a failed adopt leaves the fd open");
    close(p[0]);
    close(p[1]);
    sm_conn *c;
    cr_assert_eq(sm_conn_adopt(&c, sv[0], sv[0], NULL), 0);
    echo_through(s, c);
}

Test(adopt, server_listens_on_a_socket_it_is_given)
{
    sm_server_handlers h = { .on_message = echo_message };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, NULL, NULL), 0);
    char addr[SM_ADDRSTRLEN], where[SM_ADDRSTRLEN];
    int fd = raw_listener(addr);
    int index = sm_server_listen_fd(s, fd);
    cr_assert_eq(index, 0, "%s", sm_last_error());
    cr_assert_gt(sm_server_addr(s, index, where, sizeof where), 0);
    cr_expect_str_eq(where, addr);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_expect_eq(sm_server_listen_fd(s, sv[0]), SM_EINVAL, "a connected socket does not listen");
    close(sv[0]);
    close(sv[1]);
    sm_conn *c;
    cr_assert_eq(sm_connect(&c, addr), 0, "%s", sm_last_error());
    echo_through(s, c);
    cr_expect_not(is_open(fd), "the server closed the listener it owned");
}

Test(adopt, listen_inherited_ignores_a_variable_meant_for_another_process)
{
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, NULL, NULL, NULL), 0);
    cr_expect_eq(sm_server_listen_inherited(s), 0, "not activated");
    char other[32];
    snprintf(other, sizeof other, "%ld", (long)getpid() + 1);
    setenv("LISTEN_PID", other, 1);
    setenv("LISTEN_FDS", "1", 1);
    cr_expect_eq(sm_server_listen_inherited(s), 0, "LISTEN_PID names another process");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    sm_server_free(s);
}

/* What systemd does: the listening socket as fd 3, LISTEN_FDS=1 and
 * LISTEN_PID=the server's pid, then exec. */
Test(adopt, echo_server_serves_a_socket_from_systemd, .timeout = 20)
{
    char addr[SM_ADDRSTRLEN];
    int fd = raw_listener(addr);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char me[32];
        /* Never outliving the test; fd 3 inherited (raw_listener's socket
         * is close-on-exec, and dup2 onto itself would keep that). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(126);
        if ((fd != 3 && dup2(fd, 3) < 0) || fcntl(3, F_SETFD, 0) < 0)
            _exit(126);
        snprintf(me, sizeof me, "%ld", (long)getpid());
        setenv("LISTEN_PID", me, 1);
        setenv("LISTEN_FDS", "1", 1);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execl(BUILD_DIR "/examples/echo-server", "echo-server", (char *)NULL);
        _exit(127);
    }
    close(fd);
    sm_conn *c = client_to(addr);
    expect_echo(c);
    sm_close(c);
    kill(pid, SIGTERM);
    int status = 0;
    cr_assert(reap(pid, WAIT_MS, &status), "echo-server did not stop on SIGTERM");
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "echo-server exited cleanly");
}
