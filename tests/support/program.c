/* The project's programs as processes, with a stdin of their own: started
 * (under valgrind memcheck when SM_EXAMPLES_VALGRIND is set), read line by
 * line, stopped by signal, their exit checked. */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROGRAMS 8
static pid_t programs[MAX_PROGRAMS];
char last_err[4096];

void end_procs(void)
{
    for (int i = 0; i < MAX_PROGRAMS; i++)
        if (programs[i] > 0) {
            kill(programs[i], SIGKILL);
            waitpid(programs[i], NULL, 0);
            programs[i] = 0;
        }
}

static void track(pid_t pid, pid_t old)
{
    for (int i = 0; i < MAX_PROGRAMS; i++)
        if (programs[i] == old) {
            programs[i] = pid;
            return;
        }
    cr_assert_fail("more than %d processes", MAX_PROGRAMS);
}

struct program program_start(const char *const argv[], int with_stdin)
{
    /* An error or a leak under memcheck makes the program exit 99, which
     * the exit checks catch. */
    static const char *const memcheck[] = { "/usr/bin/valgrind", "-q", "--error-exitcode=99",
                                            "--leak-check=full",
                                            "--errors-for-leak-kinds=definite,indirect" };
    const char *args[24];
    size_t n = 0;
    if (getenv("SM_EXAMPLES_VALGRIND"))
        for (size_t i = 0; i < sizeof memcheck / sizeof memcheck[0]; i++)
            args[n++] = memcheck[i];
    for (size_t i = 0; argv[i]; i++) {
        cr_assert_lt(n + 1, sizeof args / sizeof args[0]);
        args[n++] = argv[i];
    }
    args[n] = NULL;

    int out[2], err[2], in[2] = { -1, -1 };
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    cr_assert_eq(pipe2(err, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    if (with_stdin)
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* Only async-signal-safe calls until exec; never outlive the test. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(126);
        int stdin_fd = with_stdin ? in[1] : open("/dev/null", O_RDONLY);
        if (stdin_fd < 0 || dup2(stdin_fd, STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
            dup2(err[1], STDERR_FILENO) < 0)
            _exit(126);
        execv(args[0], (char *const *)args);
        _exit(127);
    }
    track(pid, 0);
    close(out[1]);
    close(err[1]);
    if (with_stdin)
        close(in[1]);
    return (struct program){ .pid = pid, .in = in[0], .out = out[0], .err = err[0] };
}

int program_finish(struct program *p)
{
    read_all(p->err, last_err, sizeof last_err, PROC_MS); /* to its exit */
    int status = 0;
    int exited = reap(p->pid, PROC_MS, &status);
    track(0, p->pid);
    close(p->out);
    close(p->err);
    if (p->in >= 0)
        close(p->in);
    p->pid = 0;
    return exited ? status : -1;
}

void expect_exit(struct program *p, int code, const char *what)
{
    int status = program_finish(p);
    cr_assert_neq(status, -1, "%s did not exit in time; stderr: %s", what, last_err);
    cr_assert(WIFEXITED(status), "%s died of signal %d; stderr: %s", what,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0, last_err);
    cr_assert_eq(WEXITSTATUS(status), code, "%s exited %d, expected %d; stderr: %s", what,
                 WEXITSTATUS(status), code, last_err);
}

void stop_with(struct program *p, int sig, const char *what)
{
    cr_assert_eq(kill(p->pid, sig), 0);
    expect_exit(p, 0, what);
}

void expect_listening(struct program *p, const char *what, const char *want,
                      char got[SM_ADDRSTRLEN])
{
    char line[SM_ADDRSTRLEN + 32];
    if (read_line(p->out, line, sizeof line, PROC_MS) < 0) {
        kill(p->pid, SIGKILL);
        program_finish(p);
        cr_assert_fail("%s printed no listening line; stderr: %s", what, last_err);
    }
    cr_assert(strncmp(line, "listening on ", 13) == 0, "%s printed '%s' first", what, line);
    size_t len = strlen(line + 13);
    cr_assert_lt(len, SM_ADDRSTRLEN, "%s printed '%s'", what, line);
    if (want)
        cr_assert_str_eq(line + 13, want, "%s", what);
    if (got)
        memcpy(got, line + 13, len + 1);
}
