/*
 * Peers that come and go, as processes: examples/robot.c and
 * examples/reconnecting-client.c.  Suite examples, so `make
 * check-valgrind` runs every program here under valgrind.
 *
 *   - Three robots, each dialling the other two: one link per pair of
 *     robots (counted in /proc/net/tcp), each says "up" once per other
 *     robot, and every line typed reaches each other robot exactly once.
 *   - A robot killed with SIGKILL and restarted on its port: the others
 *     say "down", then "up" within the longest backoff (5 s) plus 1 s, and
 *     lines flow again.  Restarted without peers, it can only be reached
 *     by the others dialling it again (they had given up their own links
 *     to it for the one it dialled); restarted with them, the links are
 *     doubled again and must come back to one per pair.
 *   - reconnecting-client against echo-server, which is killed and
 *     restarted on the same port: every line is answered.
 *
 * The robots need each other's addresses before they start, so the test
 * picks free ports first (listening on port 0 and closing).  Every wait
 * is bounded, and every process is ended by its PID.
 */
#include "support/support.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXAMPLE(name) BUILD_DIR "/examples/" name
#define LINE_MS 15000       /* a line that must come */
#define MAX_BACKOFF_MS 5000 /* sm_server_connect's longest wait by default */
#define QUIET_MS 1000       /* listened to after the last line, for extras */

/* ---- processes (tests/support/program.c) ---- */

/* Sends sig: the program must exit 0 and say nothing on stderr. */
static void stop_silently(struct program *p, int sig, const char *what)
{
    stop_with(p, sig, what);
    cr_assert_str_empty(last_err, "%s: stderr: %s", what, last_err);
}

/* SIGKILL: no goodbye, as when the power goes. */
static void crash(struct program *p)
{
    cr_assert_eq(kill(p->pid, SIGKILL), 0);
    program_finish(p);
}

/* n free ports on 127.0.0.1: listened on all at once (so they differ),
 * then closed. */
static void free_addrs(char addrs[][SM_ADDRSTRLEN], int n)
{
    int fds[8];
    cr_assert_leq(n, 8);
    for (int i = 0; i < n; i++)
        fds[i] = raw_listener(addrs[i]);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* ---- robots ---- */

#define LOG_LINES 256
#define LOG_LEN 160

struct robot {
    const char *name;
    char addr[SM_ADDRSTRLEN]; /* where it listens */
    struct program p;
    int nlog; /* every line it printed after its listening line */
    char log[LOG_LINES][LOG_LEN];
};

/* Starts r on r->addr, dialling the addresses of peers[0..npeers). */
static void robot_start(struct robot *r, struct robot *const peers[], int npeers)
{
    const char *argv[8] = { EXAMPLE("robot"), r->name, r->addr };
    cr_assert_leq(npeers, 4);
    for (int i = 0; i < npeers; i++)
        argv[3 + i] = peers[i]->addr;
    r->p = program_start(argv, 1);
    r->nlog = 0;
    expect_listening(&r->p, r->name, r->addr, NULL);
}

/* The last lines r printed, for failure messages. */
static const char *tail_of(const struct robot *r)
{
    static char text[2048];
    size_t len = 0;
    text[0] = '\0';
    for (int i = r->nlog > 12 ? r->nlog - 12 : 0; i < r->nlog; i++) {
        int n = snprintf(text + len, sizeof text - len, "\n    %s", r->log[i]);
        if (n < 0 || (size_t)n >= sizeof text - len)
            break;
        len += (size_t)n;
    }
    return r->nlog ? text : " (nothing)";
}

/* Reads r's next line into its log within ms: its index, or -1. */
static int next_line(struct robot *r, int ms)
{
    cr_assert_lt(r->nlog, LOG_LINES, "%s printed too much:%s", r->name, tail_of(r));
    if (read_line(r->p.out, r->log[r->nlog], LOG_LEN, ms) < 0)
        return -1;
    return r->nlog++;
}

/* The index of the first line from index `from` on that is exactly the
 * formatted text, read as it comes within LINE_MS. */
__attribute__((format(printf, 3, 4))) static int wait_line(struct robot *r, int from,
                                                           const char *fmt, ...)
{
    char want[LOG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    for (int i = from; i < r->nlog; i++)
        if (strcmp(r->log[i], want) == 0)
            return i;
    int64_t end = now_ms() + LINE_MS;
    for (;;) {
        int i = next_line(r, (int)(end - now_ms()));
        cr_assert_geq(i, 0, "%s never printed '%s'; it printed:%s", r->name, want, tail_of(r));
        if (strcmp(r->log[i], want) == 0)
            return i;
    }
}

/* Whatever r prints within ms goes to its log. */
static void listen_to(struct robot *r, int ms)
{
    int64_t end = now_ms() + ms;
    int64_t left;
    while ((left = end - now_ms()) > 0 && next_line(r, (int)left) >= 0) {
    }
}

/* How many of r's lines are exactly the formatted text. */
__attribute__((format(printf, 2, 3))) static int count_lines(const struct robot *r, const char *fmt,
                                                             ...)
{
    char want[LOG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    int n = 0;
    for (int i = 0; i < r->nlog; i++)
        n += strcmp(r->log[i], want) == 0;
    return n;
}

static void type_line(struct robot *r, const char *text)
{
    cr_assert_eq(put_line(r->p.in, "%s\n", text), 0, "%s's stdin: %s", r->name, strerror(errno));
}

/* Established TCP connections accepted on any of the robots' ports: one
 * per link, since every link is accepted by one robot.  Each one's ports
 * and socket inode go to `seen` (for failure messages). */
static int links_between(struct robot *const rs[], int n, char *seen, size_t cap)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    cr_assert_not_null(f, "/proc/net/tcp: %s", strerror(errno));
    char line[256];
    int links = 0;
    size_t len = 0;
    seen[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        unsigned local_port, remote_port, state;
        unsigned long inode;
        if (sscanf(line, " %*d: %*x:%x %*x:%x %x %*x:%*x %*x:%*x %*x %*u %*d %lu", &local_port,
                   &remote_port, &state, &inode) != 4)
            continue; /* the heading */
        for (int i = 0; i < n; i++)
            if (state == 1 /* TCP_ESTABLISHED */ && local_port == addr_port(rs[i]->addr)) {
                links++;
                int w = snprintf(seen + len, cap - len, " %u<-%u(inode %lu)", local_port,
                                 remote_port, inode);
                if (w > 0 && (size_t)w < cap - len)
                    len += (size_t)w;
            }
    }
    fclose(f);
    return links;
}

/* Waits (LINE_MS at most) for exactly one link per pair of robots, and
 * checks that it stays so for a moment. */
static void expect_one_link_per_pair(struct robot *const rs[], int n)
{
    int want = n * (n - 1) / 2, have = -1;
    char seen[2048];
    int64_t end = now_ms() + LINE_MS;
    while ((have = links_between(rs, n, seen, sizeof seen)) != want && now_ms() < end)
        sleep_ms(20);
    cr_assert_eq(have, want, "%d links between %d robots, expected %d:%s", have, n, want, seen);
    sleep_ms(300);
    have = links_between(rs, n, seen, sizeof seen);
    cr_assert_eq(have, want, "%d links between %d robots a moment later, expected %d:%s", have, n,
                 want, seen);
}

/* Each robot types a line; each other robot must print it exactly once
 * (after listening a while for copies). */
static void every_line_once(struct robot *const rs[], int n, const char *tag)
{
    char text[8][64];
    for (int i = 0; i < n; i++) {
        snprintf(text[i], sizeof text[i], "%s from %s", tag, rs[i]->name);
        type_line(rs[i], text[i]);
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (i != j)
                wait_line(rs[j], 0, "%s: from %s: %s", rs[j]->name, rs[i]->name, text[i]);
    for (int j = 0; j < n; j++)
        listen_to(rs[j], QUIET_MS / n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int got = count_lines(rs[j], "%s: from %s: %s", rs[j]->name, rs[i]->name, text[i]);
            cr_assert_eq(got, i == j ? 0 : 1, "%s printed %s's line '%s' %d times:%s", rs[j]->name,
                         rs[i]->name, text[i], got, tail_of(rs[j]));
        }
}

/* Three robots, each told the other two's addresses, all up. */
static void three_robots(struct robot *a, struct robot *b, struct robot *c)
{
    char addrs[3][SM_ADDRSTRLEN];
    free_addrs(addrs, 3);
    struct robot *all[3] = { a, b, c };
    for (int i = 0; i < 3; i++)
        memcpy(all[i]->addr, addrs[i], SM_ADDRSTRLEN);
    for (int i = 0; i < 3; i++) {
        struct robot *peers[2] = { all[(i + 1) % 3], all[(i + 2) % 3] };
        robot_start(all[i], peers, 2);
    }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j)
                wait_line(all[i], 0, "%s: up %s", all[i]->name, all[j]->name);
}

static struct robot alice = { .name = "alice" }, bob = { .name = "bob" },
                    carol = { .name = "carol" };

Test(examples, robots_keep_one_link_per_pair_and_say_every_line_once, .fini = end_procs,
     .timeout = 120)
{
    three_robots(&alice, &bob, &carol);
    struct robot *const all[3] = { &alice, &bob, &carol };

    /* Six links were dialled; three are kept. */
    expect_one_link_per_pair(all, 3);
    every_line_once(all, 3, "first");
    every_line_once(all, 3, "second");

    /* Retiring the doubled links was silent: one "up" per robot, no
     * "down". */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j) {
                cr_assert_eq(count_lines(all[i], "%s: up %s", all[i]->name, all[j]->name), 1,
                             "%s:%s", all[i]->name, tail_of(all[i]));
                cr_assert_eq(count_lines(all[i], "%s: down %s", all[i]->name, all[j]->name), 0,
                             "%s:%s", all[i]->name, tail_of(all[i]));
            }
    expect_one_link_per_pair(all, 3);

    stop_silently(&alice.p, SIGINT, "robot alice");
    stop_silently(&bob.p, SIGTERM, "robot bob");
    stop_silently(&carol.p, SIGTERM, "robot carol");
}

/* r crashed: each of the others says "down r" (from index *mark[i] on),
 * then r is started again on its port, dialling peers[0..npeers); each of
 * the others must say "up r" within the longest backoff plus a second. */
static void crash_and_restart(struct robot *r, struct robot *const others[2],
                              struct robot *const peers[], int npeers)
{
    int mark[2];
    for (int i = 0; i < 2; i++)
        mark[i] = others[i]->nlog;
    crash(&r->p);
    int down[2];
    for (int i = 0; i < 2; i++)
        down[i] = wait_line(others[i], mark[i], "%s: down %s", others[i]->name, r->name);

    robot_start(r, peers, npeers);
    int64_t started = now_ms();
    for (int i = 0; i < 2; i++) {
        wait_line(others[i], down[i], "%s: up %s", others[i]->name, r->name);
        int64_t took = now_ms() - started;
        cr_assert_leq(took, MAX_BACKOFF_MS + 1000,
                      "%s took %lld ms to reach %s again after its restart", others[i]->name,
                      (long long)took, r->name);
    }
    for (int i = 0; i < 2; i++)
        wait_line(r, 0, "%s: up %s", r->name, others[i]->name);
}

Test(examples, robots_reach_a_restarted_robot_again, .fini = end_procs, .timeout = 180)
{
    three_robots(&alice, &bob, &carol);
    struct robot *const all[3] = { &alice, &bob, &carol };
    expect_one_link_per_pair(all, 3);

    /* Alice's links are the ones she dialled ("alice" sorts first): bob
     * and carol gave up their own.  Restarted with no peers, she is
     * reached only if they dial her again. */
    struct robot *const not_alice[2] = { &bob, &carol };
    crash_and_restart(&alice, not_alice, NULL, 0);
    every_line_once(all, 3, "after alice came back");
    expect_one_link_per_pair(all, 3);

    /* Bob restarted as he was: he dials both again, alice redials him,
     * carol dials him again; one link per pair once more. */
    struct robot *const not_bob[2] = { &alice, &carol };
    crash_and_restart(&bob, not_bob, not_bob, 2);
    every_line_once(all, 3, "after bob came back");
    expect_one_link_per_pair(all, 3);

    stop_silently(&alice.p, SIGTERM, "robot alice");
    stop_silently(&bob.p, SIGTERM, "robot bob");
    stop_silently(&carol.p, SIGTERM, "robot carol");
}

Test(examples, robot_and_reconnecting_client_refuse_bad_arguments, .fini = end_procs)
{
    const char *usage[] = { EXAMPLE("robot"), "lonely", NULL };
    struct program p = program_start(usage, 1);
    expect_exit(&p, 2, "robot with no LISTEN_ADDR");
    cr_assert(strstr(last_err, "usage"), "stderr: %s", last_err);

    const char *bad_listen[] = { EXAMPLE("robot"), "r", "no-port", NULL };
    p = program_start(bad_listen, 1);
    expect_exit(&p, 1, "robot r no-port");
    cr_assert_str_not_empty(last_err);

    char addr[1][SM_ADDRSTRLEN];
    free_addrs(addr, 1);
    const char *bad_peer[] = { EXAMPLE("robot"), "r", addr[0], "no-port", NULL };
    p = program_start(bad_peer, 1);
    expect_listening(&p, "robot r ADDR no-port", addr[0], NULL);
    expect_exit(&p, 1, "robot r ADDR no-port");
    cr_assert(strstr(last_err, "no-port"), "stderr: %s", last_err);

    const char *client_usage[] = { EXAMPLE("reconnecting-client"), NULL };
    p = program_start(client_usage, 1);
    expect_exit(&p, 2, "reconnecting-client without ADDR");
    cr_assert(strstr(last_err, "usage"), "stderr: %s", last_err);
}

/* ---- reconnecting-client ---- */

static struct program echo_server(const char *at, char addr[SM_ADDRSTRLEN])
{
    const char *argv[] = { EXAMPLE("echo-server"), at, NULL };
    struct program p = program_start(argv, 1);
    expect_listening(&p, "echo-server", NULL, addr);
    return p;
}

/* The client's next line must be want, within ms. */
static void expect_reply(struct program *client, const char *want, int ms)
{
    char line[256];
    cr_assert_geq(read_line(client->out, line, sizeof line, ms), 0,
                  "reconnecting-client printed no '%s' within %d ms", want, ms);
    cr_assert_str_eq(line, want);
}

Test(examples, reconnecting_client_carries_on_across_a_server_restart, .fini = end_procs,
     .timeout = 120)
{
    char addr[SM_ADDRSTRLEN], again[SM_ADDRSTRLEN];
    struct program srv = echo_server("127.0.0.1:0", addr);
    const char *argv[] = { EXAMPLE("reconnecting-client"), addr, NULL };
    struct program client = program_start(argv, 1);
    cr_assert_eq(put_line(client.in, "one\n"), 0);
    expect_reply(&client, "one", LINE_MS);

    /* The server dies; a line typed meanwhile waits for its return. */
    crash(&srv);
    cr_assert_eq(put_line(client.in, "two\n"), 0);
    sleep_ms(700);
    srv = echo_server(addr, again);
    cr_assert_str_eq(again, addr);
    int64_t back = now_ms();
    expect_reply(&client, "two", LINE_MS);
    cr_assert_leq(now_ms() - back, MAX_BACKOFF_MS + 1000, "the reply took %lld ms",
                  (long long)(now_ms() - back));
    cr_assert_eq(put_line(client.in, "three\n"), 0);
    expect_reply(&client, "three", LINE_MS);

    /* And once more, the server gone between two lines. */
    crash(&srv);
    srv = echo_server(addr, again);
    cr_assert_eq(put_line(client.in, "four\n"), 0);
    expect_reply(&client, "four", LINE_MS);

    /* The end of stdin: exit 0, nothing more printed; each loss noted on
     * stderr. */
    cr_assert_eq(shutdown(client.in, SHUT_WR), 0);
    char rest[256];
    read_all(client.out, rest, sizeof rest, PROC_MS);
    cr_assert_str_empty(rest, "printed more: %s", rest);
    expect_exit(&client, 0, "reconnecting-client");
    cr_assert(strstr(last_err, "reconnecting"), "stderr: %s", last_err);
    stop_silently(&srv, SIGTERM, "echo-server");
}
