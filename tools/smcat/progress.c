/* smcat: the progress line on a terminal (see smcat.h). */
#include "smcat.h"

#include <poll.h>
#include <stdio.h>
#include <unistd.h>

/* Transfers larger than this get a progress line on a terminal. */
#define PROGRESS_MIN (4u * 1024u * 1024u)
#define PROGRESS_MS 250

atomic_uint_least64_t bytes_in, bytes_out;

static void format_size(char *buf, size_t len, double bytes)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (bytes >= 1024 && u < 4)
        bytes /= 1024, u++;
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

static void progress_print(struct progress *p, bool last)
{
    uint64_t in = atomic_load(&bytes_in), out = atomic_load(&bytes_out);
    if (!p->shown && in + out < PROGRESS_MIN)
        return;
    double secs = (double)(now_ms() - p->start) / 1000;
    char s_out[32], s_in[32], s_rate[32];
    format_size(s_out, sizeof s_out, (double)out);
    format_size(s_in, sizeof s_in, (double)in);
    format_size(s_rate, sizeof s_rate, secs > 0 ? (double)(in + out) / secs : 0);
    /* \r and the clearing sequence rewrite the same terminal line. */
    fprintf(stderr, "\rsmcat: sent %s, received %s, %s/s\033[K%s", s_out, s_in, s_rate,
            last ? "\n" : "");
    p->shown = true;
}

static void *progress_main(void *arg)
{
    struct progress *p = arg;
    struct pollfd pfd = { p->stop_fd, POLLIN, 0 };
    while (poll(&pfd, 1, PROGRESS_MS) <= 0 || !pfd.revents)
        progress_print(p, false);
    if (p->shown)
        progress_print(p, true);
    return NULL;
}

/* Only people watching a terminal want it; logs and pipes stay clean. */
void progress_start(struct progress *p, const struct config *cfg, int stop_fd)
{
    *p = (struct progress){ .stop_fd = stop_fd, .start = now_ms() };
    if (cfg->quiet || !isatty(STDERR_FILENO))
        return;
    p->running = pthread_create(&p->thread, NULL, progress_main, p) == 0;
}

/* The stop pipe must already be readable. */
void progress_finish(struct progress *p)
{
    if (p->running)
        pthread_join(p->thread, NULL);
}
