/*
 * Connections over any byte stream: sm_conn_adopt on socketpairs, pipe
 * pairs and a serial port (a pseudo-terminal in raw mode stands in for
 * one), and sockets handed to the event server: sm_server_adopt,
 * sm_server_listen_fd and systemd socket activation.
 */
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* A message of len bytes whose content depends on seed and offset. */
static uint8_t *message(size_t len, unsigned seed)
{
    uint8_t *m = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        m[i] = (uint8_t)(i * 31 + seed * 7 + i / 253);
    return m;
}

static void expect_message(sm_conn *from, size_t len, unsigned seed)
{
    void *got = NULL;
    ssize_t n = sm_recv_alloc(from, &got);
    cr_assert_eq(n, (ssize_t)len, "received %zd of %zu: %s", n, len, sm_last_error());
    uint8_t *want = message(len, seed);
    cr_assert_arr_eq(got, want, len, "message %u arrived intact", seed);
    free(want);
    free(got);
}

struct sender {
    sm_conn *c;
    size_t len;
    unsigned seed;
    int rc;
};

static void *send_in_thread(void *arg)
{
    struct sender *s = arg;
    uint8_t *m = message(s->len, s->seed);
    s->rc = sm_send(s->c, m, s->len);
    free(m);
    return NULL;
}

/* Sends from a to b in a thread (large messages fill any buffer), and
 * checks what b receives. */
static void pass(sm_conn *a, sm_conn *b, size_t len, unsigned seed)
{
    struct sender s = { a, len, seed, 1 };
    pthread_t t;
    pthread_create(&t, NULL, send_in_thread, &s);
    expect_message(b, len, seed);
    pthread_join(t, NULL);
    cr_assert_eq(s.rc, 0, "send: %s", sm_strerror(s.rc));
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

static void echo(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

static void *run(void *arg)
{
    sm_server_run(arg);
    return NULL;
}

static void expect_echo(sm_conn *c)
{
    cr_assert_eq(sm_send(c, "hello", 5), 0, "%s", sm_last_error());
    char buf[16];
    cr_assert_eq(sm_recv(c, buf, sizeof buf), 5, "%s", sm_last_error());
    cr_assert_arr_eq(buf, "hello", 5);
}

Test(adopt, server_serves_a_socket_it_is_given)
{
    sm_server_handlers h = { .on_message = echo };
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
    pthread_t t;
    pthread_create(&t, NULL, run, s);
    sm_conn *c;
    cr_assert_eq(sm_conn_adopt(&c, sv[0], sv[0], NULL), 0);
    expect_echo(c);
    sm_close(c);
    sm_server_stop(s);
    pthread_join(t, NULL);
    sm_server_free(s);
}

/* A listening TCP socket on 127.0.0.1 with a free port; returns the fd
 * and writes "127.0.0.1:PORT" into addr. */
static int tcp_listener(char *addr, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
    cr_assert_eq(listen(fd, 16), 0);
    socklen_t len = sizeof in;
    getsockname(fd, (struct sockaddr *)&in, &len);
    snprintf(addr, cap, "127.0.0.1:%u", ntohs(in.sin_port));
    return fd;
}

Test(adopt, server_listens_on_a_socket_it_is_given)
{
    sm_server_handlers h = { .on_message = echo };
    sm_server *s;
    cr_assert_eq(sm_server_new(&s, &h, NULL, NULL), 0);
    char addr[64], where[SM_ADDRSTRLEN];
    int fd = tcp_listener(addr, sizeof addr);
    int index = sm_server_listen_fd(s, fd);
    cr_assert_eq(index, 0, "%s", sm_last_error());
    cr_assert_gt(sm_server_addr(s, index, where, sizeof where), 0);
    cr_expect_str_eq(where, addr);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_expect_eq(sm_server_listen_fd(s, sv[0]), SM_EINVAL, "a connected socket does not listen");
    close(sv[0]);
    close(sv[1]);
    pthread_t t;
    pthread_create(&t, NULL, run, s);
    sm_conn *c;
    cr_assert_eq(sm_connect(&c, addr), 0, "%s", sm_last_error());
    expect_echo(c);
    sm_close(c);
    sm_server_stop(s);
    pthread_join(t, NULL);
    sm_server_free(s);
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
    char addr[64];
    int fd = tcp_listener(addr, sizeof addr);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char me[32];
        if (dup2(fd, 3) < 0)
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
    sm_conn *c;
    sm_options o = { .recv_timeout_ms = 5000 };
    cr_assert_eq(sm_connect_opts(&c, addr, &o), 0, "%s", sm_last_error());
    expect_echo(c);
    sm_close(c);
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "echo-server exited cleanly");
}
