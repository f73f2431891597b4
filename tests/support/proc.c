/* Child processes, tracked by PID so a suite's .fini can end whatever a
 * failed test left; lines over their pipes; their resources from /proc. */
#include "support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_CHILDREN 16

/* ---- children ---- */

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

void kill_tracked_children(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
}

char **env_with(const char *name, const char *value, char *slot, size_t cap)
{
    size_t n = 0, name_len = strlen(name);
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    cr_assert_not_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], name, name_len) != 0 || environ[i][name_len] != '=')
            env[k++] = environ[i];
    if (value) {
        int len = snprintf(slot, cap, "%s=%s", name, value);
        cr_assert(len > 0 && (size_t)len < cap, "%s is too long", name);
        env[k++] = slot;
    }
    env[k] = NULL;
    return env;
}

/* In the child between fork and exec: only async-signal-safe calls, and
 * it never outlives the test process (parent: its pid before the fork). */
static void exec_child(const char *const argv[], char *const env[], const struct rlimit *nofile,
                       int out, int err, pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(126);
    if (nofile && setrlimit(RLIMIT_NOFILE, nofile) < 0)
        _exit(125);
    int in = open("/dev/null", O_RDONLY);
    if (in < 0 || dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 ||
        (err >= 0 && dup2(err, STDERR_FILENO) < 0))
        _exit(126);
    execvpe(argv[0], (char *const *)argv, env ? env : environ);
    _exit(127);
}

struct child spawn_child(const char *const argv[], char *const env[], long nofile, int want_err)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = nofile > 0 ? (rlim_t)nofile : rl.rlim_cur;
    int out[2], err[2] = { -1, -1 };
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    if (want_err)
        cr_assert_eq(pipe2(err, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        exec_child(argv, env, nofile > 0 ? &rl : NULL, out[1], err[1], parent);
    track(pid);
    close(out[1]);
    if (want_err)
        close(err[1]);
    return (struct child){ .pid = pid, .out = out[0], .err = err[0] };
}

pid_t fork_child(int *cmd, int *rep, int (*child)(int cmd, int rep))
{
    int to_child[2], from_child[2]; /* socket pairs: sends without SIGPIPE */
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, to_child), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, from_child), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(to_child[1]);
        close(from_child[0]);
        _exit(child(to_child[0], from_child[1]));
    }
    track(pid);
    close(to_child[0]);
    close(from_child[1]);
    *cmd = to_child[1];
    *rep = from_child[0];
    return pid;
}

int reap(pid_t pid, int timeout_ms, int *status)
{
    int64_t end = now_ms() + timeout_ms;
    int exited;
    while (!(exited = waitpid(pid, status, WNOHANG) == pid) && now_ms() < end)
        sleep_ms(5);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, status, 0);
    }
    untrack(pid);
    return exited;
}

/* ---- lines ---- */

/* Waits up to ms for fd to be readable: 1, or 0 (timeout, error). */
static int readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    return r > 0;
}

int read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t n = 0;
    int64_t end = now_ms() + timeout_ms;
    while (n + 1 < cap) {
        int left = (int)(end - now_ms());
        if (left <= 0 || !readable(fd, left))
            return -1;
        char ch;
        ssize_t k = read(fd, &ch, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        if (ch == '\n')
            break;
        buf[n++] = ch;
    }
    buf[n] = '\0';
    return (int)n;
}

void read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    size_t len = 0;
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0 || !readable(fd, left))
            break;
        char chunk[512];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t keep = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
        memcpy(buf + len, chunk, keep);
        len += keep;
    }
    buf[len] = '\0';
}

int put_line(int fd, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return -1;
    return send(fd, buf, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* ---- resources ---- */

/* Reads a small /proc file into buf; its length, or -1. */
static ssize_t read_proc(pid_t pid, const char *what, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return n;
}

/* A "Vm...:" line of /proc/PID/status, in bytes; -1 if missing. */
static long proc_status(pid_t pid, const char *key)
{
    char buf[4096];
    if (read_proc(pid, "status", buf, sizeof buf) < 0)
        return -1;
    char *p = strstr(buf, key);
    long kb;
    if (!p || sscanf(p + strlen(key), " %ld", &kb) != 1)
        return -1;
    return kb * 1024;
}

/* User + system CPU time, from /proc/PID/stat; -1 if unknown. */
static long proc_cpu_ms(pid_t pid)
{
    char buf[1024];
    if (read_proc(pid, "stat", buf, sizeof buf) < 0)
        return -1;
    char *p = strrchr(buf, ')'); /* after the command name, which may hold spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

long rss_bytes(void)
{
    return proc_status(getpid(), "VmRSS:");
}

long rss_of(pid_t pid)
{
    long v = proc_status(pid, "VmRSS:");
    cr_assert_gt(v, 0, "no VmRSS for %ld", (long)pid);
    return v;
}

long hwm_of(pid_t pid)
{
    long v = proc_status(pid, "VmHWM:");
    cr_assert_gt(v, 0, "no VmHWM for %ld", (long)pid);
    return v;
}

long cpu_ms(pid_t pid)
{
    long v = proc_cpu_ms(pid);
    cr_assert_geq(v, 0, "no CPU time for %ld", (long)pid);
    return v;
}

int fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - (pid == getpid()); /* the directory's own descriptor */
}

rlim_t limit_leaving(int slots, int *open)
{
    int fd, seen = 0;
    *open = 0;
    for (fd = 0; fd < 65536; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            (*open)++;
        else if (++seen == slots)
            break;
    }
    return (rlim_t)fd + 1;
}
