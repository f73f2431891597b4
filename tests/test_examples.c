/* The examples, run as processes: the tutorial's server and client,
 * chat-server, login-server with login-client, threaded-server and
 * echo-server (the Python peer's tests are in test_interop.c), and the
 * TLS options of echo-server, client, login-server and login-client, with
 * certificates made per test by tests/tls/make-certs.sh (Python's ssl and
 * openssl s_client against them are in tests/tls.sh).  Each server is
 * started on port 0 and found through its "listening on ADDR" line; the
 * tests' own clients use the blocking API.  Every wait is bounded, and
 * every process this file starts is killed by its PID if a test fails
 * before reaping it; each test's temporary directory, keys included, is
 * removed after it. */
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define EXAMPLE(name) BUILD_DIR "/examples/" name
#define WAIT_MS 10000 /* generous: sanitizer builds are slow */
#define MAX_CHILDREN 16

/* ---- processes ---- */

struct proc {
    pid_t pid;
    int out; /* read end of the child's stdout */
    int err; /* read end of its stderr, or -1 (a file, or collected) */
};

/* Children not yet reaped; cleanup kills what a failed test left. */
static pid_t children[MAX_CHILDREN];

static void track(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
}

/* The test's temporary directory, if it made one; cleanup removes it. */
static char temp_dir[32];

static const char *make_temp_dir(void)
{
    snprintf(temp_dir, sizeof temp_dir, "/tmp/sm-examples-XXXXXX");
    cr_assert_not_null(mkdtemp(temp_dir), "mkdtemp: %s", strerror(errno));
    return temp_dir;
}

/* nftw's callback: removes one file, or a directory already emptied. */
static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *where)
{
    (void)st, (void)type, (void)where;
    remove(path);
    return 0; /* go on with the rest */
}

/* Runs after every test, passed or failed: no process or file is left. */
static void cleanup(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    if (temp_dir[0]) {
        /* Everything in it: users files, logs, sockets, TLS keys. */
        nftw(temp_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
        temp_dir[0] = '\0';
    }
}

TestSuite(examples, .timeout = 60, .fini = cleanup);

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec t = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

/* Our environment, with SM_PASSWORD replaced by password (or removed when
 * password is NULL).  Free with free(); the strings are shared. */
static char **make_env(const char *password, char *slot, size_t slot_len)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    cr_assert_not_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "SM_PASSWORD=", 12) != 0)
            env[k++] = environ[i];
    if (password) {
        int len = snprintf(slot, slot_len, "SM_PASSWORD=%s", password);
        cr_assert(len > 0 && (size_t)len < slot_len);
        env[k++] = slot;
    }
    env[k] = NULL;
    return env;
}

/* The stderr of the last child collected, for checks and failure messages. */
static char last_stderr[2048];

/* With SM_EXAMPLES_VALGRIND set, every example runs under memcheck: an
 * error or a leak makes it exit 99, which the tests' status checks catch. */
static const char *const *under_valgrind(const char *const argv[])
{
    static const char *const memcheck[] = { "/usr/bin/valgrind", "-q", "--error-exitcode=99",
                                            "--leak-check=full",
                                            "--errors-for-leak-kinds=definite,indirect" };
    enum { M = sizeof memcheck / sizeof memcheck[0] };
    static const char *wrapped[M + 16];
    if (!getenv("SM_EXAMPLES_VALGRIND"))
        return argv;
    size_t n = 0;
    for (; n < M; n++)
        wrapped[n] = memcheck[n];
    for (size_t i = 0; argv[i] && n + 1 < sizeof wrapped / sizeof wrapped[0]; i++)
        wrapped[n++] = argv[i];
    wrapped[n] = NULL;
    return wrapped;
}

/* Starts argv[0] (a path) with stdin from /dev/null and stdout to a pipe.
 * stderr goes to a pipe too or, when err_path is given, is appended to that
 * file (a server's log, read once it stopped).  password goes into
 * SM_PASSWORD (NULL: unset).  The child is tracked until reaped. */
static struct proc spawn(const char *const argv[], const char *password, const char *err_path)
{
    char slot[256];
    char **env = make_env(password, slot, sizeof slot);
    argv = under_valgrind(argv);
    int out[2], err[2] = { -1, -1 };
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    if (!err_path)
        cr_assert_eq(pipe2(err, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec.  The child
         * never outlives the test, even one that is killed. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(126);
        int in = open("/dev/null", O_RDONLY);
        int errfd = err_path ? open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600) : err[1];
        if (in < 0 || errfd < 0 || dup2(in, STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
            dup2(errfd, STDERR_FILENO) < 0)
            _exit(126);
        execve(argv[0], (char *const *)argv, env);
        _exit(127);
    }
    free(env);
    close(out[1]);
    if (err[1] >= 0)
        close(err[1]);
    track(pid);
    return (struct proc){ .pid = pid, .out = out[0], .err = err[0] };
}

/* Reads one line (without its '\n') from fd into buf.  Returns its length,
 * or -1 at end of file or after timeout_ms. */
static int read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t len = 0;
    while (len + 1 < cap) {
        int64_t left = deadline - now_ms();
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        char ch;
        ssize_t n = read(fd, &ch, 1);
        if (n <= 0)
            return -1;
        if (ch == '\n')
            break;
        buf[len++] = ch;
    }
    buf[len] = '\0';
    return (int)len;
}

/* Reads the child's stdout into out and its stderr into last_stderr until
 * both pipes reach end of file or timeout_ms passes, then closes them.
 * Keeps at most cap - 1 bytes of stdout (out NULL: discarded); both are
 * NUL-terminated.  Reading both at once means neither pipe can fill up
 * and stall the child. */
static void collect(struct proc *p, char *out, size_t cap, int timeout_ms)
{
    struct stream {
        int fd;
        char *buf;
        size_t cap, len;
    } s[2] = { { p->out, out, cap, 0 }, { p->err, last_stderr, sizeof last_stderr, 0 } };
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        struct pollfd pfd[2];
        struct stream *of[2];
        nfds_t n = 0;
        for (int i = 0; i < 2; i++)
            if (s[i].fd >= 0) {
                pfd[n] = (struct pollfd){ .fd = s[i].fd, .events = POLLIN };
                of[n++] = &s[i];
            }
        int64_t left = deadline - now_ms();
        if (n == 0 || left <= 0 || poll(pfd, n, (int)left) <= 0)
            break;
        for (nfds_t k = 0; k < n; k++) {
            if (!pfd[k].revents)
                continue;
            char chunk[512];
            ssize_t r = read(pfd[k].fd, chunk, sizeof chunk);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                close(of[k]->fd);
                of[k]->fd = -1;
                continue;
            }
            if (of[k]->buf) {
                size_t room = of[k]->cap - 1 - of[k]->len;
                size_t keep = (size_t)r < room ? (size_t)r : room;
                memcpy(of[k]->buf + of[k]->len, chunk, keep);
                of[k]->len += keep;
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        if (s[i].fd >= 0)
            close(s[i].fd);
        if (s[i].buf)
            s[i].buf[s[i].len] = '\0';
    }
    p->out = p->err = -1;
}

/* Waits at most timeout_ms for pid to end and returns its wait status;
 * after that it is killed by its PID with SIGKILL and -1 is returned.
 * Either way it is reaped. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            untrack(pid);
            return status;
        }
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            untrack(pid);
            return -1;
        }
        sleep_ms(10);
    }
}

static void assert_exit_code(int status, int code, const char *what)
{
    cr_assert(status != -1, "%s did not exit in time; stderr: %s", what, last_stderr);
    cr_assert(WIFEXITED(status), "%s died of signal %d; stderr: %s", what,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0, last_stderr);
    cr_assert_eq(WEXITSTATUS(status), code, "%s exited %d, expected %d; stderr: %s", what,
                 WEXITSTATUS(status), code, last_stderr);
}

static void assert_failed(int status, const char *what)
{
    cr_assert(status != -1, "%s did not exit in time; stderr: %s", what, last_stderr);
    cr_assert(WIFEXITED(status), "%s died of signal %d instead of exiting with an error", what,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    cr_assert_neq(WEXITSTATUS(status), 0, "%s exited 0, expected an error", what);
}

/* Starts a server and reads its `count` "listening on ADDR" lines. */
static struct proc start_server(const char *const argv[], const char *err_path,
                                char addrs[][SM_ADDRSTRLEN], int count)
{
    struct proc p = spawn(argv, NULL, err_path);
    for (int i = 0; i < count; i++) {
        char line[SM_ADDRSTRLEN + 32];
        if (read_line(p.out, line, sizeof line, WAIT_MS) < 0) {
            kill(p.pid, SIGKILL);
            collect(&p, NULL, 0, WAIT_MS);
            wait_exit(p.pid, WAIT_MS);
            cr_assert_fail("%s printed no listening line %d; stderr: %s", argv[0], i + 1,
                           last_stderr);
        }
        cr_assert(strncmp(line, "listening on ", 13) == 0, "got '%s'", line);
        size_t len = strlen(line + 13);
        cr_assert(len < SM_ADDRSTRLEN, "got '%s'", line);
        memcpy(addrs[i], line + 13, len + 1);
    }
    return p;
}

/* Sends sig and expects a clean exit with status 0. */
static void stop_server(struct proc *p, int sig, const char *what)
{
    cr_assert_eq(kill(p->pid, sig), 0);
    collect(p, NULL, 0, WAIT_MS);
    assert_exit_code(wait_exit(p->pid, WAIT_MS), 0, what);
}

/* Runs a program to the end; its stdout goes to out, its stderr to
 * last_stderr.  Returns the wait status (-1: killed after WAIT_MS). */
static int run(const char *const argv[], const char *password, char *out, size_t cap)
{
    struct proc p = spawn(argv, password, NULL);
    collect(&p, out, cap, WAIT_MS);
    return wait_exit(p.pid, WAIT_MS);
}

/* ---- clients (the blocking API) ---- */

static sm_conn *connect_to(const char *addr)
{
    sm_options opt = { .connect_timeout_ms = WAIT_MS,
                       .recv_timeout_ms = WAIT_MS,
                       .send_timeout_ms = WAIT_MS };
    sm_conn *c;
    int rc = sm_connect_opts(&c, addr, &opt);
    cr_assert_eq(rc, 0, "connect %s: %s", addr, sm_last_error());
    return c;
}

static void send_text(sm_conn *c, const char *text)
{
    cr_assert_eq(sm_send(c, text, strlen(text)), 0, "send: %s", sm_last_error());
}

static void recv_text(sm_conn *c, char *buf, size_t cap)
{
    ssize_t n = sm_recv(c, buf, cap - 1);
    cr_assert(n >= 0, "receive: %s", sm_last_error());
    buf[n] = '\0';
}

/* The next message on c must be exactly the formatted text. */
__attribute__((format(printf, 2, 3))) static void expect(sm_conn *c, const char *fmt, ...)
{
    char want[512], got[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    recv_text(c, got, sizeof got);
    cr_assert_str_eq(got, want);
}

/* ---- chat-server ---- */

/* Connects to the chat and returns the number the server gave us. */
static sm_conn *chat_join(const char *addr, unsigned *number)
{
    sm_conn *c = connect_to(addr);
    char got[64];
    recv_text(c, got, sizeof got);
    cr_assert_eq(sscanf(got, "you are %u", number), 1, "welcome was '%s'", got);
    return c;
}

Test(examples, chat_three_clients_on_two_ports)
{
    const char *argv[] = { EXAMPLE("chat-server"), "127.0.0.1:0", "127.0.0.1:0", NULL };
    char addr[2][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 2);
    cr_assert_str_neq(addr[0], addr[1]);

    /* Two clients on port A, one on port B; everyone hears who joins. */
    unsigned a1n, a2n, bn;
    sm_conn *a1 = chat_join(addr[0], &a1n);
    sm_conn *a2 = chat_join(addr[0], &a2n);
    expect(a1, "%u joined", a2n);
    sm_conn *b = chat_join(addr[1], &bn);
    expect(a1, "%u joined", bn);
    expect(a2, "%u joined", bn);
    cr_assert(a1n < a2n && a2n < bn, "numbers %u %u %u", a1n, a2n, bn);

    /* A message reaches the other two, across ports, with the prefix. */
    send_text(a1, "hello everyone");
    expect(a2, "[%u] hello everyone", a1n);
    expect(b, "[%u] hello everyone", a1n);
    send_text(b, "hi from port B");
    expect(a1, "[%u] hi from port B", bn);
    expect(a2, "[%u] hi from port B", bn);
    /* The senders got nothing back: their next message answers /who,
     * which lists all three. */
    send_text(a1, "/who");
    expect(a1, "users: %u %u %u", a1n, a2n, bn);
    send_text(b, "/who");
    expect(b, "users: %u %u %u", a1n, a2n, bn);

    /* /to reaches only its target. */
    char line[128];
    snprintf(line, sizeof line, "/to %u psst, only you", a1n);
    send_text(b, line);
    expect(a1, "[from %u] psst, only you", bn);
    send_text(a2, "/who"); /* a2 heard nothing of it */
    expect(a2, "users: %u %u %u", a1n, a2n, bn);
    send_text(b, "/to 999999 anyone?");
    expect(b, "no such user 999999");

    /* Leaving is announced; the one who left is no longer a target. */
    sm_close(a2);
    expect(a1, "%u left", a2n);
    expect(b, "%u left", a2n);
    snprintf(line, sizeof line, "/to %u still there?", a2n);
    send_text(b, line);
    expect(b, "no such user %u", a2n);
    send_text(a1, "/who");
    expect(a1, "users: %u %u", a1n, bn);

    /* SIGINT with clients connected: exit 0, clients see the close. */
    stop_server(&srv, SIGINT, "chat-server");
    char buf[64];
    cr_assert_eq(sm_recv(a1, buf, sizeof buf), SM_ECLOSED);
    cr_assert_eq(sm_recv(b, buf, sizeof buf), SM_ECLOSED);
    sm_close(a1);
    sm_close(b);
}

Test(examples, chat_disconnects_oversized_message)
{
    const char *argv[] = { EXAMPLE("chat-server"), "127.0.0.1:0", NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 1);
    unsigned an, bn;
    sm_conn *a = chat_join(addr[0], &an);
    sm_conn *b = chat_join(addr[0], &bn);
    expect(a, "%u joined", bn);

    /* Far beyond the server's 4 KiB limit: b is dropped, a is told. */
    size_t big = 100000;
    char *msg = calloc(1, big);
    cr_assert_not_null(msg);
    memset(msg, 'x', big);
    cr_assert_eq(sm_send(b, msg, big), 0);
    free(msg);
    expect(a, "%u left", bn);
    send_text(a, "/who");
    expect(a, "users: %u", an);
    sm_close(b);

    stop_server(&srv, SIGTERM, "chat-server");
    sm_close(a);
}

/* ---- login-server and login-client ---- */

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* Reads a whole (small) file into buf. */
static void slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
}

/* Runs login-client; checks what it printed and its exit status. */
static void login(const char *addr, const char *user, const char *password, const char *want_out,
                  int want_code)
{
    const char *argv[] = { EXAMPLE("login-client"), addr, user, NULL };
    char out[256];
    int status = run(argv, password, out, sizeof out);
    assert_exit_code(status, want_code, "login-client");
    cr_assert_str_eq(out, want_out, "login %s: printed '%s'", user, out);
}

static void add_user(const char *user, const char *password, const char *file)
{
    const char *argv[] = { EXAMPLE("login-server"), "--add", user, file, NULL };
    char out[256];
    assert_exit_code(run(argv, password, out, sizeof out), 0, "login-server --add");
}

/* A raw request "user\0password" over the blocking API. */
static void raw_request(sm_conn *c, const void *req, size_t len, const char *want)
{
    cr_assert_eq(sm_send(c, req, len), 0, "send: %s", sm_last_error());
    expect(c, "%s", want);
}

#define ALICE_PW "correct horse: battery staple"
#define BOB_PW "hunter2"

Test(examples, login_accepts_and_denies)
{
    const char *dir = make_temp_dir();
    char users[64], errlog[64], text[4096];
    snprintf(users, sizeof users, "%s/users", dir);
    snprintf(errlog, sizeof errlog, "%s/server.log", dir);

    add_user("alice", ALICE_PW, users);
    add_user("bob", BOB_PW, users);

    /* Hashes only, never the passwords; owner-only permissions. */
    slurp(users, text, sizeof text);
    cr_assert(contains(text, "alice:$y$") || contains(text, "alice:$6$"), "%s", text);
    cr_assert(contains(text, "\nbob:$"), "%s", text);
    cr_assert_not(contains(text, ALICE_PW));
    cr_assert_not(contains(text, "correct horse"));
    cr_assert_not(contains(text, BOB_PW));
    struct stat st;
    cr_assert_eq(stat(users, &st), 0);
    cr_assert_eq(st.st_mode & 077, 0, "users file mode %o", (unsigned)st.st_mode);

    /* --add without a file prints the line, with a fresh salt each time. */
    const char *print_argv[] = { EXAMPLE("login-server"), "--add", "carol", NULL };
    char line1[256], line2[256];
    assert_exit_code(run(print_argv, "pw", line1, sizeof line1), 0, "--add");
    assert_exit_code(run(print_argv, "pw", line2, sizeof line2), 0, "--add");
    cr_assert(strncmp(line1, "carol:$", 7) == 0, "printed '%s'", line1);
    cr_assert_str_neq(line1, line2);

    const char *argv[] = { EXAMPLE("login-server"), "127.0.0.1:0", users, NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, errlog, addr, 1);

    login(addr[0], "alice", ALICE_PW, "OK\n", 0);
    login(addr[0], "alice", "correct horse", "DENIED\n", 1);
    login(addr[0], "alice", BOB_PW, "DENIED\n", 1);
    login(addr[0], "bob", BOB_PW, "OK\n", 0);
    login(addr[0], "mallory", ALICE_PW, "DENIED\n", 1); /* unknown user */
    login(addr[0], "carol", "pw", "DENIED\n", 1);       /* only printed */

    /* The raw protocol: several requests on one connection; anything
     * malformed is DENIED. */
    sm_conn *c = connect_to(addr[0]);
    static const char good[] = "alice\0" ALICE_PW;
    raw_request(c, good, sizeof good - 1, "OK");
    raw_request(c, good, sizeof good, "DENIED");              /* a trailing '\0' */
    raw_request(c, "alice", 5, "DENIED");                     /* no '\0' at all */
    raw_request(c, "\0" ALICE_PW, sizeof ALICE_PW, "DENIED"); /* no name */
    raw_request(c, "", 0, "DENIED");
    raw_request(c, "bob\0", 4, "DENIED"); /* empty password */
    raw_request(c, good, sizeof good - 1, "OK");
    sm_close(c);

    /* --add again changes the password: the later line wins. */
    add_user("alice", "a new one", users);
    login(addr[0], "alice", "a new one", "OK\n", 0);
    login(addr[0], "alice", ALICE_PW, "DENIED\n", 1);

    stop_server(&srv, SIGTERM, "login-server");

    /* The log names users, never passwords. */
    slurp(errlog, text, sizeof text);
    cr_assert(contains(text, "alice"), "log: %s", text);
    cr_assert_not(contains(text, "correct horse"), "log: %s", text);
    cr_assert_not(contains(text, BOB_PW), "log: %s", text);
    cr_assert_not(contains(text, "a new one"), "log: %s", text);
    slurp(users, text, sizeof text);
    cr_assert_not(contains(text, "a new one"));
}

Test(examples, login_client_errors_exit_2)
{
    /* Nobody listens on a port we just closed: exit 2, nothing on stdout. */
    sm_listener *l;
    char addr[SM_ADDRSTRLEN];
    cr_assert_eq(sm_listen(&l, "127.0.0.1:0"), 0);
    sm_listener_addr(l, addr, sizeof addr);
    sm_listener_close(l);
    login(addr, "alice", "pw", "", 2);

    /* No SM_PASSWORD and stdin is /dev/null: no password, exit 2. */
    const char *argv[] = { EXAMPLE("login-client"), addr, "alice", NULL };
    char out[64];
    assert_exit_code(run(argv, NULL, out, sizeof out), 2, "login-client");
}

/* ---- login-server: hashing off the loop ---- */

static int64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* One request on c and its answer (which must be want); returns how many
 * microseconds the round trip took. */
static int64_t timed_request(sm_conn *c, const char *req, size_t len, const char *want)
{
    int64_t start = now_us();
    raw_request(c, req, len, want);
    return now_us() - start;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t median(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_i64);
    return v[n / 2];
}

/* A login server with alice (ALICE_PW) in a fresh users file. */
static struct proc start_login_server(char addr[][SM_ADDRSTRLEN], char *errlog, size_t cap)
{
    const char *dir = make_temp_dir();
    static char users[64];
    snprintf(users, sizeof users, "%s/users", dir);
    snprintf(errlog, cap, "%s/server.log", dir);
    add_user("alice", ALICE_PW, users);
    const char *argv[] = { EXAMPLE("login-server"), "127.0.0.1:0", users, NULL };
    return start_server(argv, errlog, addr, 1);
}

#define PIPELINED 40 /* requests in one write: 40 hashes, one after another */
#define SAMPLES 5

Test(examples, login_pipelined_requests_do_not_stall_other_clients)
{
    char addr[1][SM_ADDRSTRLEN], errlog[64], text[4096];
    struct proc srv = start_login_server(addr, errlog, sizeof errlog);
    static const char good[] = "alice\0" ALICE_PW, bad[] = "alice\0guess";

    /* What one login costs here, unloaded. */
    sm_conn *b = connect_to(addr[0]);
    int64_t one[SAMPLES];
    for (int i = 0; i < SAMPLES; i++)
        one[i] = timed_request(b, good, sizeof good - 1, "OK");
    int64_t t1 = median(one, SAMPLES);

    /* A request and the next one in one write: both answered, in order. */
    cr_assert_eq(sm_send_flags(b, good, sizeof good - 1, SM_MORE), 0);
    cr_assert_eq(sm_send(b, bad, sizeof bad - 1), 0);
    expect(b, "OK");
    expect(b, "DENIED");

    /* PIPELINED requests in one write.  A server hashing on its loop
     * thread would keep every other client waiting for all of them. */
    sm_conn *a = connect_to(addr[0]);
    for (int i = 0; i < PIPELINED; i++)
        cr_assert_eq(sm_send_flags(a, bad, sizeof bad - 1, SM_MORE), 0);
    cr_assert_eq(sm_flush(a), 0, "%s", sm_last_error());
    sleep_ms(20); /* let them arrive first */
    int64_t t2 = timed_request(b, good, sizeof good - 1, "OK");
    cr_assert_lt(t2 * 4, t1 * PIPELINED,
                 "another client's login took %lld us while %d pipelined requests were "
                 "pending; one login takes %lld us",
                 (long long)t2, PIPELINED, (long long)t1);

    /* The pipelining client broke the one-at-a-time rule: disconnected
     * after at most the two answers it may have. */
    char buf[64];
    ssize_t n;
    int answers = 0;
    while ((n = sm_recv(a, buf, sizeof buf)) >= 0)
        answers++;
    cr_assert_eq(n, SM_ECLOSED, "%s", sm_strerror((int)n));
    cr_assert_leq(answers, 2);
    sm_close(a);
    sm_close(b);

    stop_server(&srv, SIGTERM, "login-server");
    slurp(errlog, text, sizeof text);
    cr_assert(contains(text, "disconnected"), "log: %s", text);
    cr_assert_not(contains(text, "guess"), "log: %s", text);
}

Test(examples, login_unknown_user_costs_as_much_as_a_known_one)
{
    char addr[1][SM_ADDRSTRLEN], errlog[64];
    struct proc srv = start_login_server(addr, errlog, sizeof errlog);
    static const char known[] = "alice\0guess", unknown[] = "mallory\0guess";

    /* Alternating, so that any slowdown of the machine hits both. */
    sm_conn *c = connect_to(addr[0]);
    int64_t t_known[SAMPLES], t_unknown[SAMPLES];
    for (int i = 0; i < SAMPLES; i++) {
        t_known[i] = timed_request(c, known, sizeof known - 1, "DENIED");
        t_unknown[i] = timed_request(c, unknown, sizeof unknown - 1, "DENIED");
    }
    sm_close(c);
    int64_t k = median(t_known, SAMPLES), u = median(t_unknown, SAMPLES);
    /* Without the hash, an unknown user is answered a hundred times faster. */
    cr_assert(u * 3 > k && k * 3 > u,
              "wrong password for a known user: %lld us, for an unknown one: %lld us", (long long)k,
              (long long)u);
    stop_server(&srv, SIGTERM, "login-server");
}

/* ---- threaded-server ---- */

#define THREADED_CLIENTS 20
#define ROUNDS 50

struct echo_job {
    const char *addr;
    pthread_barrier_t *all_connected;
    sm_conn *conn; /* left open for the caller */
    int echoed;    /* round trips that came back intact */
    char error[128];
};

/* One client: connect, wait for all the others, then ROUNDS echoes.
 * Criterion asserts belong to the test's thread, so this only records. */
static void *echo_client(void *arg)
{
    struct echo_job *job = arg;
    sm_options opt = { .connect_timeout_ms = WAIT_MS,
                       .recv_timeout_ms = WAIT_MS,
                       .send_timeout_ms = WAIT_MS };
    if (sm_connect_opts(&job->conn, job->addr, &opt) < 0)
        snprintf(job->error, sizeof job->error, "connect: %s", sm_last_error());
    pthread_barrier_wait(job->all_connected);
    for (int r = 0; job->conn && r < ROUNDS && !job->error[0]; r++) {
        char msg[64], got[64];
        int len = snprintf(msg, sizeof msg, "client %p round %d", (void *)job, r);
        ssize_t n;
        if (sm_send(job->conn, msg, (size_t)len) < 0 ||
            (n = sm_recv(job->conn, got, sizeof got)) < 0)
            snprintf(job->error, sizeof job->error, "round %d: %s", r, sm_last_error());
        else if (n == len && memcmp(got, msg, (size_t)len) == 0)
            job->echoed++;
        else
            snprintf(job->error, sizeof job->error, "round %d: wrong echo", r);
    }
    return NULL;
}

Test(examples, threaded_server_echoes_20_concurrent_clients)
{
    const char *argv[] = { EXAMPLE("threaded-server"), "127.0.0.1:0", NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 1);

    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADED_CLIENTS);
    struct echo_job jobs[THREADED_CLIENTS];
    pthread_t threads[THREADED_CLIENTS];
    for (int i = 0; i < THREADED_CLIENTS; i++) {
        jobs[i] = (struct echo_job){ .addr = addr[0], .all_connected = &barrier };
        cr_assert_eq(pthread_create(&threads[i], NULL, echo_client, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADED_CLIENTS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < THREADED_CLIENTS; i++) {
        cr_expect_str_empty(jobs[i].error, "client %d: %s", i, jobs[i].error);
        cr_expect_eq(jobs[i].echoed, ROUNDS, "client %d", i);
    }

    /* The largest message it takes (64 KiB) comes back whole. */
    size_t big = SM_RECV_BUFFER;
    char *msg = malloc(big);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < big; i++)
        msg[i] = (char)(i * 7);
    cr_assert_eq(sm_send(jobs[0].conn, msg, big), 0);
    void *echo;
    ssize_t n = sm_recv_alloc(jobs[0].conn, &echo);
    cr_assert_eq(n, (ssize_t)big, "%s", sm_last_error());
    cr_assert_eq(memcmp(echo, msg, big), 0);
    free(echo);
    free(msg);

    /* SIGTERM with all 20 still connected: exit 0, clients see the close. */
    stop_server(&srv, SIGTERM, "threaded-server");
    for (int i = 0; i < THREADED_CLIENTS; i++) {
        char buf[16];
        cr_expect_eq(sm_recv(jobs[i].conn, buf, sizeof buf), SM_ECLOSED, "client %d", i);
        sm_close(jobs[i].conn);
    }
}

#define MAX_THREADS 64 /* as in examples/threaded-server.c */

Test(examples, threaded_server_makes_client_65_wait)
{
    const char *argv[] = { EXAMPLE("threaded-server"), "127.0.0.1:0", NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 1);

    /* MAX_THREADS clients, each served (so each holds a thread). */
    sm_conn *conns[MAX_THREADS];
    for (int i = 0; i < MAX_THREADS; i++) {
        conns[i] = connect_to(addr[0]);
        send_text(conns[i], "ping");
        expect(conns[i], "ping");
    }
    /* One more connects (the system queues it) but is not served... */
    sm_conn *late = connect_to(addr[0]);
    send_text(late, "me too");
    sm_options brief = { .recv_timeout_ms = 300 };
    cr_assert_eq(sm_conn_set_options(late, &brief), 0);
    char buf[64];
    cr_assert_eq(sm_recv(late, buf, sizeof buf), SM_ETIMEDOUT);
    /* ...until a place frees up. */
    sm_close(conns[0]);
    sm_options patient = { .recv_timeout_ms = WAIT_MS };
    cr_assert_eq(sm_conn_set_options(late, &patient), 0);
    expect(late, "me too");

    stop_server(&srv, SIGINT, "threaded-server");
    sm_close(late);
    for (int i = 1; i < MAX_THREADS; i++)
        sm_close(conns[i]);
}

Test(examples, threaded_server_frees_threads_held_by_idle_clients)
{
    const char *argv[] = { EXAMPLE("threaded-server"), "--idle", "500", "127.0.0.1:0", NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 1);

    /* MAX_THREADS clients take every thread, then fall silent. */
    sm_conn *idle[MAX_THREADS];
    int64_t first_silent = 0;
    for (int i = 0; i < MAX_THREADS; i++) {
        idle[i] = connect_to(addr[0]);
        send_text(idle[i], "ping");
        expect(idle[i], "ping");
        if (i == 0)
            first_silent = now_ms();
    }
    /* One more is served once the idle ones have been let go: not before
     * the first was silent for 500 ms, and within WAIT_MS. */
    sm_conn *late = connect_to(addr[0]);
    send_text(late, "me too");
    expect(late, "me too");
    cr_assert_geq(now_ms() - first_silent, 400, "served before any client was idle for long");

    /* The idle ones were disconnected, between messages. */
    char buf[16];
    for (int i = 0; i < MAX_THREADS; i++)
        cr_assert_eq(sm_recv(idle[i], buf, sizeof buf), SM_ECLOSED, "client %d", i);

    stop_server(&srv, SIGTERM, "threaded-server");
    sm_close(late);
    for (int i = 0; i < MAX_THREADS; i++)
        sm_close(idle[i]);
}

/* ---- echo-server ---- */

Test(examples, echo_server_echoes_and_exits_on_sigterm)
{
    const char *argv[] = { EXAMPLE("echo-server"), "127.0.0.1:0", NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 1);

    sm_conn *a = connect_to(addr[0]), *b = connect_to(addr[0]);
    send_text(a, "from a");
    send_text(b, "from b");
    expect(b, "from b");
    expect(a, "from a");
    send_text(a, ""); /* an empty message is a message too */
    expect(a, "%s", "");

    size_t big = 200000; /* several reads' worth */
    char *msg = malloc(big);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < big; i++)
        msg[i] = (char)(i % 251);
    cr_assert_eq(sm_send(b, msg, big), 0);
    void *echo;
    cr_assert_eq(sm_recv_alloc(b, &echo), (ssize_t)big, "%s", sm_last_error());
    cr_assert_eq(memcmp(echo, msg, big), 0);
    free(echo);
    free(msg);

    stop_server(&srv, SIGTERM, "echo-server");
    char buf[16];
    cr_assert_eq(sm_recv(a, buf, sizeof buf), SM_ECLOSED);
    sm_close(a);
    sm_close(b);
}

/* ---- every new server stops cleanly as soon as it is ready ---- */

static void start_and_signal(const char *const argv[], int sig)
{
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 1);
    stop_server(&srv, sig, argv[0]);
}

Test(examples, servers_exit_0_on_signal_when_idle)
{
    const char *dir = make_temp_dir();
    char users[64];
    snprintf(users, sizeof users, "%s/users", dir);
    add_user("alice", "pw", users);

    const char *chat[] = { EXAMPLE("chat-server"), "127.0.0.1:0", NULL };
    const char *login_srv[] = { EXAMPLE("login-server"), "127.0.0.1:0", users, NULL };
    const char *threaded[] = { EXAMPLE("threaded-server"), "127.0.0.1:0", NULL };
    const int sigs[] = { SIGINT, SIGTERM };
    for (int i = 0; i < 2; i++) {
        start_and_signal(chat, sigs[i]);
        start_and_signal(login_srv, sigs[i]);
        start_and_signal(threaded, sigs[i]);
    }
}

Test(examples, servers_refuse_bad_arguments)
{
    char out[256];
    /* A malformed address: an error, not a crash or a hang. */
    const char *chat[] = { EXAMPLE("chat-server"), "127.0.0.1:0", "no-port", NULL };
    int status = run(chat, NULL, out, sizeof out);
    assert_failed(status, "chat-server 127.0.0.1:0 no-port");
    const char *threaded[] = { EXAMPLE("threaded-server"), "no-port", NULL };
    status = run(threaded, NULL, out, sizeof out);
    assert_failed(status, "threaded-server no-port");
    /* A users file that does not exist. */
    const char *login_srv[] = { EXAMPLE("login-server"), "127.0.0.1:0", "/nonexistent/sm-users",
                                NULL };
    status = run(login_srv, NULL, out, sizeof out);
    assert_failed(status, "login-server without its users file");
    /* A user name with ':' cannot be stored. */
    const char *bad_user[] = { EXAMPLE("login-server"), "--add", "a:b", NULL };
    assert_exit_code(run(bad_user, "pw", out, sizeof out), 2, "--add a:b");
    cr_assert_str_empty(out);
}

/* ---- the tutorial's server and client ---- */

/* The server on listen_addr prints where it listens: an address starting
 * with want (a prefix ending in ':' with a port to follow, or else the
 * whole address).  The client receives "TEST" and prints it with a
 * newline; both exit 0 and print nothing else. */
static void tutorial_over(const char *listen_addr, const char *want)
{
    const char *server_argv[] = { EXAMPLE("server"), listen_addr, NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(server_argv, NULL, addr, 1);
    size_t want_len = strlen(want);
    if (want[want_len - 1] == ':') {
        cr_assert(strncmp(addr[0], want, want_len) == 0, "server %s: listening on %s", listen_addr,
                  addr[0]);
        cr_assert_gt(atoi(addr[0] + want_len), 0, "no port chosen: %s", addr[0]);
    } else {
        cr_assert_str_eq(addr[0], want);
    }

    const char *client_argv[] = { EXAMPLE("client"), addr[0], NULL };
    char out[64];
    assert_exit_code(run(client_argv, NULL, out, sizeof out), 0, "client");
    cr_assert_str_eq(out, "TEST\n", "client over %s printed '%s'", addr[0], out);
    cr_assert_str_empty(last_stderr, "client over %s: stderr %s", addr[0], last_stderr);

    collect(&srv, out, sizeof out, WAIT_MS);
    assert_exit_code(wait_exit(srv.pid, WAIT_MS), 0, "server");
    cr_assert_str_empty(out, "server printed more: %s", out);
    cr_assert_str_empty(last_stderr, "server over %s: stderr %s", addr[0], last_stderr);
}

Test(examples, tutorial_over_ipv4)
{
    tutorial_over("127.0.0.1:0", "127.0.0.1:");
}

Test(examples, tutorial_over_ipv6)
{
    tutorial_over("[::1]:0", "[::1]:");
}

Test(examples, tutorial_over_unix_socket)
{
    char path[64], addr[80];
    snprintf(path, sizeof path, "%s/s.sock", make_temp_dir());
    snprintf(addr, sizeof addr, "unix:%s", path);
    tutorial_over(addr, addr);
    /* sm_listener_close removes the socket file it made. */
    struct stat st;
    cr_assert(stat(path, &st) < 0 && errno == ENOENT, "%s left behind", path);
}

/* A free port that nobody listens on (we listened and closed). */
static void closed_port(char addr[SM_ADDRSTRLEN])
{
    sm_listener *l;
    cr_assert_eq(sm_listen(&l, "127.0.0.1:0"), 0, "%s", sm_last_error());
    cr_assert_gt(sm_listener_addr(l, addr, SM_ADDRSTRLEN), 0);
    sm_listener_close(l);
}

Test(examples, tutorial_client_reports_refused_connection)
{
    char addr[SM_ADDRSTRLEN], out[64];
    closed_port(addr);
    const char *client_argv[] = { EXAMPLE("client"), addr, NULL };
    assert_failed(run(client_argv, NULL, out, sizeof out), "client");
    cr_assert_str_empty(out);
    cr_assert(contains(last_stderr, "refused"), "stderr: %s", last_stderr);
    cr_assert(contains(last_stderr, addr), "stderr does not name %s: %s", addr, last_stderr);
}

Test(examples, tutorial_client_fails_when_server_sends_nothing)
{
    sm_options o = { .accept_timeout_ms = WAIT_MS };
    sm_listener *l;
    char addr[SM_ADDRSTRLEN], out[64];
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), 0, "%s", sm_last_error());
    cr_assert_gt(sm_listener_addr(l, addr, sizeof addr), 0);
    const char *client_argv[] = { EXAMPLE("client"), addr, NULL };
    struct proc p = spawn(client_argv, NULL, NULL);
    sm_conn *c;
    cr_assert_eq(sm_accept(l, &c), 0, "%s", sm_last_error());
    sm_close(c); /* closed between messages, before any */
    sm_listener_close(l);
    collect(&p, out, sizeof out, WAIT_MS);
    assert_failed(wait_exit(p.pid, WAIT_MS), "client");
    cr_assert_str_empty(out);
    cr_assert_str_not_empty(last_stderr, "the client must say what went wrong");
}

Test(examples, tutorial_server_rejects_malformed_addresses)
{
    static const char *const bad[] = { "not an address", "127.0.0.1", "127.0.0.1:65536",
                                       "127.0.0.1:port", "[::1:0",    "::1:0",
                                       "unix:" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *server_argv[] = { EXAMPLE("server"), bad[i], NULL };
        char out[128];
        int status = run(server_argv, NULL, out, sizeof out);
        assert_failed(status, bad[i]);
        cr_assert_not(contains(out, "listening"), "server '%s' printed '%s'", bad[i], out);
        cr_assert_str_not_empty(last_stderr, "server '%s' said nothing on stderr", bad[i]);
    }
}

/* ---- TLS: echo-server, client, login-server and login-client ---- */

/* Makes the test CA and its certificates (tests/tls/make-certs.sh) in the
 * test's temporary directory; cleanup removes them, private keys too. */
static void make_certs(void)
{
    if (!temp_dir[0])
        make_temp_dir();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "sh tests/tls/make-certs.sh %s", temp_dir);
    cr_assert_eq(system(cmd), 0, "making certificates with openssl failed");
}

/* The path of one of those files, in one of a few static buffers. */
static const char *cert(const char *name)
{
    static char paths[8][64];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", temp_dir, name);
    return p;
}

/* "localhost:PORT" for "127.0.0.1:PORT". */
static const char *as_localhost(const char *addr)
{
    static char buf[SM_ADDRSTRLEN + 16];
    snprintf(buf, sizeof buf, "localhost%s", strrchr(addr, ':'));
    return buf;
}

/* A TLS connection that verifies the server against ca. */
static int connect_tls(sm_conn **c, const char *addr, const char *ca)
{
    sm_tls_options tls = { .ca_file = ca };
    sm_options opt = { .connect_timeout_ms = WAIT_MS,
                       .recv_timeout_ms = WAIT_MS,
                       .send_timeout_ms = WAIT_MS,
                       .tls = &tls };
    return sm_connect_opts(c, addr, &opt);
}

/* Built without OpenSSL (make TLS=0), every example refuses its TLS
 * options with a clear message, before it listens or connects. */
static void tls_missing_is_said_clearly(void)
{
    static const char *const progs[][7] = {
        { EXAMPLE("echo-server"), "--tls-cert", "c.pem", "--tls-key", "k.pem", "127.0.0.1:0" },
        { EXAMPLE("client"), "--tls-ca", "ca.pem", "127.0.0.1:1" },
        { EXAMPLE("login-server"), "--tls-cert", "c.pem", "--tls-key", "k.pem", "127.0.0.1:0",
          "/dev/null" },
        { EXAMPLE("login-client"), "--tls-ca", "ca.pem", "127.0.0.1:1", "alice" },
    };
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        const char *argv[8] = { 0 };
        memcpy(argv, progs[i], sizeof progs[i]);
        char out[256];
        assert_failed(run(argv, "pw", out, sizeof out), argv[0]);
        cr_assert(contains(last_stderr, "built without TLS"), "%s: stderr '%s'", argv[0],
                  last_stderr);
        cr_assert_str_empty(out, "%s printed '%s'", argv[0], out);
    }
}

Test(examples, echo_server_over_tls)
{
    if (!sm_tls_available()) {
        tls_missing_is_said_clearly();
        return;
    }
    make_certs();
    const char *pem = cert("server.pem"), *key = cert("server.key");
    const char *argv[] = { EXAMPLE("echo-server"), "--tls-cert", pem, "--tls-key", key,
                           "127.0.0.1:0",          NULL };
    char addr[1][SM_ADDRSTRLEN];
    struct proc srv = start_server(argv, NULL, addr, 1);

    /* Verified against the test CA, by name and by address. */
    sm_conn *a, *b, *c;
    cr_assert_eq(connect_tls(&a, as_localhost(addr[0]), cert("ca.pem")), 0, "%s", sm_last_error());
    cr_assert_eq(connect_tls(&b, addr[0], cert("ca.pem")), 0, "%s", sm_last_error());
    char subject[256];
    cr_assert_gt(sm_conn_peer_cert(a, subject, sizeof subject), 0, "%s", sm_last_error());
    cr_assert(contains(subject, "CN=localhost"), "server certificate: %s", subject);
    send_text(a, "from a");
    send_text(b, "from b");
    expect(b, "from b");
    expect(a, "from a");
    send_text(a, "");
    expect(a, "%s", "");
    size_t big = 200000; /* many TLS records */
    char *msg = malloc(big);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < big; i++)
        msg[i] = (char)(i % 251);
    cr_assert_eq(sm_send(b, msg, big), 0);
    void *echo;
    cr_assert_eq(sm_recv_alloc(b, &echo), (ssize_t)big, "%s", sm_last_error());
    cr_assert_eq(memcmp(echo, msg, big), 0);
    free(echo);
    free(msg);

    /* A client trusting another CA refuses the server. */
    cr_assert_eq(connect_tls(&c, addr[0], cert("other-ca.pem")), SM_EVERIFY, "%s", sm_last_error());
    /* A plain client is not echoed: the server drops it. */
    c = connect_to(addr[0]);
    send_text(c, "plain text");
    char buf[64];
    ssize_t n = sm_recv(c, buf, sizeof buf);
    cr_assert(n < 0 && n != SM_ETIMEDOUT, "a plain client got %zd: %s", n, sm_strerror((int)n));
    sm_close(c);
    /* The TLS clients were not disturbed. */
    send_text(a, "still here");
    expect(a, "still here");

    stop_server(&srv, SIGTERM, "echo-server");
    cr_assert_eq(sm_recv(a, buf, sizeof buf), SM_ECLOSED);
    sm_close(a);
    sm_close(b);
}

/* Runs `client --tls-ca CA HOST:PORT` against a TLS listener of the test
 * with the certificate NAME.pem and its key NAME.key (NULL: a plain
 * listener), which sends "TEST" once its handshake passed.  Returns the
 * client's wait status, its stdout in out, its stderr in last_stderr;
 * *accepted says whether the listener's handshake passed. */
static int tls_client_against(const char *name, const char *ca, const char *host, char *out,
                              size_t cap, int *accepted)
{
    char pem[32], key[32];
    snprintf(pem, sizeof pem, "%s.pem", name ? name : "");
    snprintf(key, sizeof key, "%s.key", name ? name : "");
    sm_tls_options tls = { .cert_file = cert(pem), .key_file = cert(key) };
    sm_options o = { .tls = name ? &tls : NULL,
                     .accept_timeout_ms = WAIT_MS,
                     .send_timeout_ms = WAIT_MS };
    sm_listener *l;
    cr_assert_eq(sm_listen_opts(&l, "127.0.0.1:0", &o), 0, "%s", sm_last_error());
    char where[SM_ADDRSTRLEN], addr[SM_ADDRSTRLEN + 16];
    cr_assert_gt(sm_listener_addr(l, where, sizeof where), 0);
    snprintf(addr, sizeof addr, "%s%s", host, strrchr(where, ':'));
    const char *argv[] = { EXAMPLE("client"), "--tls-ca", ca, addr, NULL };
    struct proc p = spawn(argv, NULL, NULL);
    sm_conn *c;
    *accepted = sm_accept(l, &c) == 0;
    if (*accepted) {
        sm_send(c, "TEST", 4); /* the client's failure, if any, is what we check */
        sm_close(c);
    }
    sm_listener_close(l);
    collect(&p, out, cap, WAIT_MS);
    return wait_exit(p.pid, WAIT_MS);
}

Test(examples, client_over_tls_verifies_the_server)
{
    if (!sm_tls_available()) {
        tls_missing_is_said_clearly();
        return;
    }
    make_certs();
    /* The server's certificate, the CA file the client trusts, the host
     * it connects to, and the reason it must give ("": it must connect). */
    static const struct {
        const char *server, *ca, *host, *refusal;
    } cases[] = {
        { "server", "ca.pem", "localhost", "" },
        { "server", "ca.pem", "127.0.0.1", "" },
        { "self", "self.pem", "localhost", "" }, /* self-signed, trusted as itself */
        { "server", "other-ca.pem", "localhost", "unable to get local issuer" },
        { "wronghost", "ca.pem", "localhost", "mismatch" },
        { "expired", "ca.pem", "localhost", "expired" },
        { "self", "ca.pem", "localhost", "self-signed" },
        { NULL, "ca.pem", "localhost", "TLS" }, /* a plain server */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *server = cases[i].server ? cases[i].server : "(plain)";
        char out[64];
        int accepted;
        int status = tls_client_against(cases[i].server, cert(cases[i].ca), cases[i].host, out,
                                        sizeof out, &accepted);
        if (!cases[i].refusal[0]) {
            assert_exit_code(status, 0, "client");
            cr_assert_str_eq(out, "TEST\n", "%s with %s: printed '%s'", server, cases[i].ca, out);
            cr_assert_str_empty(last_stderr, "%s: stderr %s", server, last_stderr);
            cr_assert(accepted);
            continue;
        }
        assert_failed(status, "client");
        cr_assert_str_empty(out, "%s with %s: printed '%s'", server, cases[i].ca, out);
        cr_assert(contains(last_stderr, cases[i].refusal), "%s with %s: stderr '%s', wanted '%s'",
                  server, cases[i].ca, last_stderr, cases[i].refusal);
        cr_assert(!accepted || !cases[i].server, "%s: the handshake passed", server);
    }
}

/* A TCP relay on 127.0.0.1:0 for one connection to target, as an
 * eavesdropper on the path: it carries the bytes both ways and keeps
 * those the client sent. */
struct relay {
    int listen_fd;
    char addr[SM_ADDRSTRLEN]; /* where the client connects */
    struct sockaddr_in target;
    pthread_t thread;
    char seen[65536];
    size_t seen_len;
};

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    struct pollfd lp = { .fd = r->listen_fd, .events = POLLIN };
    if (poll(&lp, 1, WAIT_MS) != 1)
        return NULL;
    int fds[2] = { accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC),
                   socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) };
    bool open[2] = { true, true }; /* still reading from that side */
    if (fds[0] < 0 || fds[1] < 0 ||
        connect(fds[1], (struct sockaddr *)&r->target, sizeof r->target) < 0)
        open[0] = open[1] = false;
    int64_t deadline = now_ms() + WAIT_MS;
    while ((open[0] || open[1]) && now_ms() < deadline) {
        struct pollfd p[2] = { { .fd = open[0] ? fds[0] : -1, .events = POLLIN },
                               { .fd = open[1] ? fds[1] : -1, .events = POLLIN } };
        if (poll(p, 2, 100) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (!p[i].revents)
                continue;
            char buf[4096];
            ssize_t n = read(fds[i], buf, sizeof buf);
            if (n > 0 && i == 0) {
                size_t keep = sizeof r->seen - r->seen_len;
                keep = (size_t)n < keep ? (size_t)n : keep;
                memcpy(r->seen + r->seen_len, buf, keep);
                r->seen_len += keep;
            }
            if (n <= 0 || write(fds[1 - i], buf, (size_t)n) != n) {
                open[i] = false; /* pass the end of this direction on */
                shutdown(fds[1 - i], SHUT_WR);
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

/* Starts a relay to target ("127.0.0.1:PORT"). */
static void relay_start(struct relay *r, const char *target)
{
    memset(r, 0, sizeof *r);
    r->target.sin_family = AF_INET;
    r->target.sin_port = htons((uint16_t)atoi(strrchr(target, ':') + 1));
    cr_assert_eq(inet_pton(AF_INET, "127.0.0.1", &r->target.sin_addr), 1);
    struct sockaddr_in me = { .sin_family = AF_INET };
    socklen_t len = sizeof me;
    me.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(r->listen_fd >= 0 && bind(r->listen_fd, (struct sockaddr *)&me, sizeof me) == 0 &&
                  listen(r->listen_fd, 1) == 0 &&
                  getsockname(r->listen_fd, (struct sockaddr *)&me, &len) == 0,
              "relay: %s", strerror(errno));
    snprintf(r->addr, sizeof r->addr, "127.0.0.1:%u", (unsigned)ntohs(me.sin_port));
    cr_assert_eq(pthread_create(&r->thread, NULL, relay_main, r), 0);
}

static void relay_join(struct relay *r)
{
    pthread_join(r->thread, NULL);
    close(r->listen_fd);
}

static int seen(const struct relay *r, const char *text)
{
    return memmem(r->seen, r->seen_len, text, strlen(text)) != NULL;
}

/* login, with `--tls-ca ca` before the address. */
static void login_tls(const char *ca, const char *addr, const char *user, const char *password,
                      const char *want_out, int want_code)
{
    const char *argv[] = { EXAMPLE("login-client"), "--tls-ca", ca, addr, user, NULL };
    char out[256];
    int status = run(argv, password, out, sizeof out);
    assert_exit_code(status, want_code, "login-client --tls-ca");
    cr_assert_str_eq(out, want_out, "login %s: printed '%s'", user, out);
}

Test(examples, login_over_tls_keeps_the_password_off_the_wire)
{
    if (!sm_tls_available()) {
        tls_missing_is_said_clearly();
        return;
    }
    make_certs();
    char users[64], plain_log[64], tls_log[64], text[4096];
    snprintf(users, sizeof users, "%s/users", temp_dir);
    snprintf(plain_log, sizeof plain_log, "%s/plain.log", temp_dir);
    snprintf(tls_log, sizeof tls_log, "%s/tls.log", temp_dir);
    add_user("alice", ALICE_PW, users);
    char addr[1][SM_ADDRSTRLEN];
    struct relay r;

    /* Plain, through the relay: the password is there for it to read
     * (which shows the relay sees what crosses it), and the server warns. */
    const char *plain_argv[] = { EXAMPLE("login-server"), "127.0.0.1:0", users, NULL };
    struct proc srv = start_server(plain_argv, plain_log, addr, 1);
    relay_start(&r, addr[0]);
    login(r.addr, "alice", ALICE_PW, "OK\n", 0);
    relay_join(&r);
    cr_assert(seen(&r, ALICE_PW), "the relay did not see the plain password");
    stop_server(&srv, SIGTERM, "login-server");
    slurp(plain_log, text, sizeof text);
    cr_assert(contains(text, "warning: no TLS"), "log: %s", text);

    /* TLS, through the relay: the same login works, and neither the name
     * nor the password can be read on the way. */
    const char *pem = cert("server.pem"), *key = cert("server.key");
    const char *tls_argv[] = { EXAMPLE("login-server"), "--tls-cert", pem, "--tls-key", key,
                               "127.0.0.1:0",           users,        NULL };
    srv = start_server(tls_argv, tls_log, addr, 1);
    relay_start(&r, addr[0]);
    login_tls(cert("ca.pem"), r.addr, "alice", ALICE_PW, "OK\n", 0);
    relay_join(&r);
    cr_assert_gt(r.seen_len, 100, "the relay saw %zu bytes", r.seen_len);
    cr_assert_not(seen(&r, ALICE_PW), "the password crossed the relay readable");
    cr_assert_not(seen(&r, "alice"), "the user name crossed the relay readable");

    login_tls(cert("ca.pem"), as_localhost(addr[0]), "alice", "wrong", "DENIED\n", 1);
    /* A server the client cannot verify never gets the password. */
    login_tls(cert("other-ca.pem"), addr[0], "mallory", ALICE_PW, "", 2);
    cr_assert(contains(last_stderr, "verify"), "stderr: %s", last_stderr);
    /* Nor does a plain request on the TLS port reach the check. */
    login(addr[0], "trudy", ALICE_PW, "", 2);
    stop_server(&srv, SIGTERM, "login-server");
    slurp(tls_log, text, sizeof text);
    cr_assert(contains(text, "alice: OK") && contains(text, "alice: DENIED"), "log: %s", text);
    cr_assert_not(contains(text, "mallory"), "log: %s", text);
    cr_assert_not(contains(text, "trudy"), "log: %s", text);
    cr_assert_not(contains(text, "warning"), "log: %s", text);
}

Test(examples, tls_options_are_checked)
{
    make_temp_dir();
    char users[64], out[256];
    snprintf(users, sizeof users, "%s/users", temp_dir);
    add_user("alice", "pw", users);
    /* Half a pair, or an option without its file: usage, exit 2. */
    static const char *const usage[][6] = {
        { EXAMPLE("echo-server"), "--tls-cert", "c.pem", "127.0.0.1:0" },
        { EXAMPLE("echo-server"), "--tls-key", "k.pem" },
        { EXAMPLE("echo-server"), "127.0.0.1:0", "--tls-cert" },
        { EXAMPLE("client"), "127.0.0.1:1", "--tls-ca" },
        { EXAMPLE("client"), "--tls-cert", "c.pem", "127.0.0.1:1" },
        { EXAMPLE("login-server"), "--tls-key", "k.pem", "127.0.0.1:0", "users" },
        { EXAMPLE("login-client"), "127.0.0.1:1", "alice", "--tls-ca" },
    };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        const char *argv[7] = { 0 };
        memcpy(argv, usage[i], sizeof usage[i]);
        assert_exit_code(run(argv, "pw", out, sizeof out), 2, argv[0]);
        cr_assert(contains(last_stderr, "usage:") && contains(last_stderr, "--tls-"),
                  "%s %s: stderr '%s'", argv[0], argv[1], last_stderr);
        cr_assert_str_empty(out);
    }
    if (!sm_tls_available()) {
        tls_missing_is_said_clearly();
        return;
    }
    /* Files that cannot be used: an error that says which, and no listener. */
    make_certs();
    const char *none = "/nonexistent/c.pem";
    const char *missing[] = { EXAMPLE("echo-server"), "--tls-cert", none, "--tls-key", none,
                              "127.0.0.1:0",          NULL };
    assert_exit_code(run(missing, NULL, out, sizeof out), 1, "echo-server, no certificate");
    cr_assert(contains(last_stderr, "certificate file"), "stderr: %s", last_stderr);
    cr_assert_not(contains(out, "listening"));
    const char *pem = cert("server.pem"), *other_key = cert("client.key");
    const char *mismatch[] = { EXAMPLE("login-server"), "--tls-cert", pem, "--tls-key", other_key,
                               "127.0.0.1:0",           users,        NULL };
    assert_exit_code(run(mismatch, NULL, out, sizeof out), 1, "login-server, another's key");
    cr_assert(contains(last_stderr, "mismatch"), "stderr: %s", last_stderr);
    cr_assert_not(contains(out, "listening"));
}
