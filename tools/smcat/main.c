/*
 * smcat - netcat for framed messages.
 *
 *     smcat --listen 127.0.0.1:0 --echo              an echo server
 *     smcat --connect 127.0.0.1:7000 --data hi --expect 1
 *     smcat --listen :7000 --format framed > capture   (replay it with
 *     smcat --connect HOST:7000 --in framed < capture)
 *
 * One connection (client, or a listener serving one client) runs two
 * threads: this one receives and prints, a sender thread sends.  Sending
 * everything before reading anything would deadlock against a peer that
 * answers as it reads (an echo server stops reading from a client whose
 * replies pile up), so both directions run at once, as in nc.
 *
 * When the sender has nothing more to send, the connection stays open in
 * both directions: many servers (libsockmsg's event server among them)
 * take the end of a client's input as the end of the conversation and
 * would drop replies still being prepared.  With --half-close the sender
 * then shuts down its side (shutdown SHUT_WR) instead, so the peer sees a
 * clean close between frames and can finish.  smcat exits once both
 * directions are done: its own input is sent and the peer has closed (or
 * --expect messages arrived, or an error or timeout ended the session).
 * docs/man/smcat.1 is the full manual; smcat.h lists the files, one per
 * concern.
 */
#include "smcat.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int complain(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smcat: ", stderr);
    vfprintf(stderr, fmt, ap);
    /* Usage errors point to the summary of the options. */
    fputs(code == EXIT_USAGE ? " (try 'smcat --help')\n" : "\n", stderr);
    va_end(ap);
    return code;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int exit_for(int rc)
{
    switch (rc) {
    case SM_ETOOBIG:
    case SM_ETRUNCATED: return EXIT_PROTO;
    case SM_ETIMEDOUT: return EXIT_TIMEOUT;
    case SM_EADDR: return EXIT_ADDR;
    default: return EXIT_FAIL;
    }
}

int exit_for_setup(int rc)
{
    if (rc == SM_EADDR)
        return EXIT_ADDR;
    if (rc == SM_ETIMEDOUT)
        return EXIT_TIMEOUT;
    return EXIT_CONNECT;
}

int main(int argc, char **argv)
{
    /* A reader that goes away (smcat ... | head) must not kill us with
     * SIGPIPE: writing stdout then fails with EPIPE, which is reported
     * ("smcat: stdout: Broken pipe") and exits 1, as the manual says. */
    struct sigaction ignore = { .sa_handler = SIG_IGN };
    sigaction(SIGPIPE, &ignore, NULL);

    struct config cfg;
    int code = parse_args(argc, argv, &cfg);
    if (code == 0)
        code = load_messages(&cfg);
    if (code == 0) {
        if (cfg.echo)
            code = run_echo(&cfg);
        else if (cfg.listen)
            code = run_listen_one(&cfg);
        else
            code = run_connect(&cfg);
    }
    free_messages(&cfg);
    if (fflush(stdout) != 0 && code == 0)
        code = complain(EXIT_FAIL, "stdout: %s", strerror(errno));
    return code < 0 ? EXIT_OK : code;
}
