/*
 * reconnecting-client - a client that outlives its server's restarts.
 * Sends each line of stdin as one message and prints the reply; when the
 * server goes away, it connects again (waiting for the server to come
 * back) and sends the line that was cut off once more.
 *
 *     ./reconnecting-client 127.0.0.1:7000       (against echo-server)
 *
 * sm_connect_retry is sm_connect that waits for a server that is not
 * there yet: it tries again after 100 ms, then twice as long each time
 * (with some randomness, so a thousand clients do not all come back in
 * the same millisecond), up to 5 s between tries.
 *
 * A line that was cut off may have reached the server before it went
 * down, and then it arrives twice: fine for an echo, but a server for
 * which a repeat matters (a payment!) needs an id in each request so it
 * can recognise one it has already done.
 *
 * Exit status: 0 at the end of stdin; 1 if the server stays away for 30 s
 * or a line gets no reply (10 s, or a second lost connection); 2 for bad
 * arguments.
 */
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <stdlib.h>

#define GIVE_UP_MS 30000 /* the server may be away this long */

/* Bounds every try, so a server that hangs is not waited for forever. */
static const sm_options options = { .connect_timeout_ms = 5000,
                                    .send_timeout_ms = 5000,
                                    .recv_timeout_ms = 10000 };

/* Sends line and receives the reply: its length (reply to free()), or the
 * error. */
static ssize_t ask(sm_conn *c, const char *line, size_t len, void **reply)
{
    int rc = sm_send(c, line, len);
    return rc < 0 ? rc : sm_recv_alloc(c, reply);
}

/* Whether rc means the connection is gone, so that a new one may work:
 * the server closed it (SM_ECLOSED; SM_ETRUNCATED inside a reply) or the
 * system says so (-errno: -ECONNRESET, -EPIPE...).  Not a timeout (a slow
 * server is still there) and not a reply too large. */
static int connection_lost(ssize_t rc)
{
    return rc != SM_ETIMEDOUT && rc != SM_ETOOBIG && rc != SM_ENOMEM && rc != SM_EINVAL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: reconnecting-client ADDR\n");
        return 2;
    }
    const char *addr = argv[1];
    sm_conn *c;
    if (sm_connect_retry(&c, addr, &options, GIVE_UP_MS) < 0) {
        fprintf(stderr, "reconnecting-client: %s\n", sm_last_error());
        return 1;
    }

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int status = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        void *reply = NULL;
        ssize_t n = ask(c, line, (size_t)len, &reply);
        if (n < 0 && connection_lost(n)) {
            /* The server went away: wait for it, then send the line again
             * (once: if that fails too, something else is wrong). */
            fprintf(stderr, "reconnecting-client: %s; reconnecting\n", sm_strerror((int)n));
            sm_close(c);
            c = NULL;
            if (sm_connect_retry(&c, addr, &options, GIVE_UP_MS) < 0) {
                fprintf(stderr, "reconnecting-client: %s\n", sm_last_error());
                status = 1;
                break;
            }
            n = ask(c, line, (size_t)len, &reply);
        }
        if (n < 0) {
            fprintf(stderr, "reconnecting-client: %s\n", sm_strerror((int)n));
            status = 1;
            break;
        }
        fwrite(reply, 1, (size_t)n, stdout);
        putchar('\n');
        fflush(stdout);
        free(reply);
    }
    free(line);
    sm_close(c);
    return status;
}
