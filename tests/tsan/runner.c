/* The runner behind tests/tsan/criterion/criterion.h (see there why). */
#include <criterion/criterion.h>

#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_TESTS 256

static struct test {
    const char *suite, *name;
    void (*fn)(void);
    struct criterion_test_extra_data extra;
} tests[MAX_TESTS];
static int test_count;

void shim_register(const char *suite, const char *name, void (*fn)(void),
                   struct criterion_test_extra_data extra)
{
    if (test_count < MAX_TESTS)
        tests[test_count++] = (struct test){ suite, name, fn, extra };
}

void shim_check(int ok, const char *expr, const char *file, int line, const char *fmt, ...)
{
    if (ok)
        return;
    fprintf(stderr, "%s:%d: assertion failed: %s: ", file, line, expr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    _exit(1);
}

void shim_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Runs one test in a child; returns 1 if it passed. */
static int run(const struct test *t)
{
    pid_t pid = fork();
    if (pid == 0) {
        alarm(t->extra.timeout > 0 ? (unsigned)t->extra.timeout + 1 : 60);
        if (t->extra.init)
            t->extra.init();
        t->fn();
        if (t->extra.fini)
            t->extra.fini();
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 1;
    fprintf(stderr, "[FAIL] %s::%s: %s %d\n", t->suite, t->name,
            WIFSIGNALED(status) ? "killed by signal" : "exit status",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    return 0;
}

int main(int argc, char **argv)
{
    const char *filter = "*";
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
    signal(SIGPIPE, SIG_DFL);
    int passed = 0, failed = 0;
    for (int i = 0; i < test_count; i++) {
        char full[256];
        snprintf(full, sizeof full, "%s/%s", tests[i].suite, tests[i].name);
        if (tests[i].extra.disabled || fnmatch(filter, full, 0) != 0)
            continue;
        if (run(&tests[i]))
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed || passed == 0 ? 1 : 0;
}
