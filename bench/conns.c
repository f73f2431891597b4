/*
 * conns - hold N concurrent connections to an echo server and do round
 * trips on all of them; report connections held, round trips per second
 * and the server's RSS growth per connection.
 *
 *     conns [-n N] [-r ROUNDS] [-s SIZE] ADDR SERVER_PID
 *
 * Each round sends one message on every connection, then receives every
 * echo and checks its content, so N requests are in flight at once.
 */
#include <sockmsg/sockmsg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Resident set size of process pid in KiB, or -1. */
static long rss_kib(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* The message for connection i in round r: its numbers, then filler. */
static void fill(char *buf, size_t size, int i, int r)
{
    memset(buf, 'a' + (i + r) % 26, size);
    snprintf(buf, size, "%d/%d", i, r);
}

int main(int argc, char **argv)
{
    int n = 10000, rounds = 5, opt;
    size_t size = 64;
    while ((opt = getopt(argc, argv, "n:r:s:")) != -1) {
        if (opt == 'n') n = atoi(optarg);
        else if (opt == 'r') rounds = atoi(optarg);
        else if (opt == 's') size = (size_t)atol(optarg);
        else return 2;
    }
    if (argc - optind != 2 || n <= 0 || rounds <= 0 || size < 16 || size > 65536) {
        fprintf(stderr, "usage: conns [-n N] [-r ROUNDS] [-s SIZE 16..65536] ADDR SERVER_PID\n");
        return 2;
    }
    const char *addr = argv[optind];
    long server_pid = atol(argv[optind + 1]);
    sm_conn **conns = calloc((size_t)n, sizeof *conns);
    char *msg = malloc(size), *got = malloc(size);
    sm_options o = { .recv_timeout_ms = 30000, .connect_timeout_ms = 10000 };
    int held = 0, rc = 0;

    long rss_before = rss_kib(server_pid);
    double t0 = now_s();
    for (; held < n; held++) {
        if ((rc = sm_connect_opts(&conns[held], addr, &o)) < 0) {
            fprintf(stderr, "conns: connection %d: %s\n", held, sm_last_error());
            break;
        }
    }
    double t_open = now_s() - t0;
    /* One round trip on every connection, so the server has seen them all,
     * then measure it with every connection idle. */
    long rss_idle = -1;
    double t_rounds = 0;
    long trips = 0;
    for (int r = 0; r <= rounds && rc >= 0; r++) {
        double t = now_s();
        for (int i = 0; i < held && rc >= 0; i++) {
            fill(msg, size, i, r);
            rc = sm_send(conns[i], msg, size);
        }
        for (int i = 0; i < held && rc >= 0; i++) {
            fill(msg, size, i, r);
            ssize_t len = sm_recv(conns[i], got, size);
            if (len != (ssize_t)size || memcmp(got, msg, size) != 0) {
                fprintf(stderr, "conns: connection %d round %d: %s\n", i, r,
                        len < 0 ? sm_last_error() : "wrong echo");
                rc = -1;
            }
        }
        if (r == 0) {
            usleep(200000);
            rss_idle = rss_kib(server_pid);
        } else {
            t_rounds += now_s() - t;
            trips += held;
        }
    }
    printf("connections held:        %d of %d (opened in %.2f s)\n", held, n, t_open);
    if (rc >= 0)
        printf("round trips per second:  %.0f (%ld trips of %zu bytes)\n",
               (double)trips / t_rounds, trips, size);
    if (rss_before > 0 && rss_idle > 0 && held > 0)
        printf("server RSS per idle conn: %.3f KiB (%ld KiB before, %ld KiB with %d idle)\n",
               (double)(rss_idle - rss_before) / held, rss_before, rss_idle, held);
    for (int i = 0; i < held; i++)
        sm_close(conns[i]);
    free(conns);
    free(msg);
    free(got);
    return rc < 0 || held < n ? 1 : 0;
}
