/*
 * login-client - asks a login-server whether a user's password is right.
 *
 *     ./login-client --tls-ca cert.pem localhost:29876 alice
 *
 * With --tls-ca the connection is TLS: the password travels encrypted,
 * and only to a server whose certificate is signed by (or is) the one in
 * that file, for the host in the address.  Without it the password
 * crosses the network as plain, readable bytes: use that only on
 * loopback or over "unix:/path".
 *
 * The password comes from the environment variable SM_PASSWORD if it is
 * set, otherwise from the terminal, without showing what you type.
 *
 * Sends one message, the user name, one '\0' byte, then the password, and
 * prints the server's answer.  Exits 0 for "OK", 1 for "DENIED" and 2 for
 * any error.
 */
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define MAX_NAME 64
#define MAX_PASSWORD 1024

/* Reads a password into buf: from $SM_PASSWORD if set, otherwise one line
 * from the terminal with echo turned off.  Returns 0, or -1. */
static int read_password(const char *prompt, char *buf, size_t size)
{
    const char *env = getenv("SM_PASSWORD");
    if (env) {
        if (strlen(env) >= size)
            return -1;
        snprintf(buf, size, "%s", env);
        return 0;
    }

    struct termios saved, quiet;
    int terminal = tcgetattr(STDIN_FILENO, &saved) == 0;
    if (terminal) {
        fputs(prompt, stderr);
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO; /* do not show what is typed */
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = fgets(buf, (int)size, stdin);
    if (terminal) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved); /* echo back on */
        fputc('\n', stderr);                        /* the Enter key was not echoed either */
    }
    if (!line)
        return -1;
    buf[strcspn(buf, "\n")] = '\0'; /* drop the newline */
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: login-client [--tls-ca FILE] ADDR USER\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *args[2], *ca = NULL;
    int nargs = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tls-ca") == 0 && i + 1 < argc)
            ca = argv[++i];
        else if (argv[i][0] != '-' && nargs < 2)
            args[nargs++] = argv[i];
        else
            return usage();
    }
    if (nargs != 2)
        return usage();
    if (ca && !sm_tls_available()) {
        fprintf(stderr, "login-client: --tls-ca: this libsockmsg was built without TLS "
                        "(OpenSSL)\n");
        return 2;
    }
    const char *addr = args[0], *user = args[1];
    size_t user_len = strlen(user);
    if (user_len == 0 || user_len > MAX_NAME) {
        fprintf(stderr, "login-client: the user name takes 1-%d bytes\n", MAX_NAME);
        return 2;
    }

    /* The request: "alice" '\0' "password", built in one buffer. */
    char request[MAX_NAME + 1 + MAX_PASSWORD + 2];
    memcpy(request, user, user_len + 1); /* the name and its '\0' */
    char *password = request + user_len + 1;
    if (read_password("Password: ", password, MAX_PASSWORD + 2) < 0 ||
        strlen(password) > MAX_PASSWORD) {
        fprintf(stderr, "login-client: no password read (at most %d bytes)\n", MAX_PASSWORD);
        explicit_bzero(request, sizeof request);
        return 2;
    }
    size_t len = user_len + 1 + strlen(password); /* no '\0' at the end */

    /* Give up instead of hanging if the server does not answer. */
    sm_options options = { .connect_timeout_ms = 5000,
                           .send_timeout_ms = 5000,
                           .recv_timeout_ms = 10000 };
    /* TLS: verify the server against the CA file and the host in addr. */
    sm_tls_options tls = { .ca_file = ca };
    if (ca)
        options.tls = &tls;
    sm_conn *conn;
    char answer[64];
    ssize_t got = -1;
    if (sm_connect_opts(&conn, addr, &options) == 0) {
        if (sm_send(conn, request, len) == 0)
            got = sm_recv(conn, answer, sizeof answer - 1);
        if (got < 0)
            fprintf(stderr, "login-client: %s\n", sm_last_error());
        sm_close(conn);
    } else {
        fprintf(stderr, "login-client: %s\n", sm_last_error());
    }
    explicit_bzero(request, sizeof request); /* forget the password */
    if (got < 0)
        return 2;

    answer[got] = '\0';
    printf("%s\n", answer);
    if (strcmp(answer, "OK") == 0)
        return 0;
    if (strcmp(answer, "DENIED") == 0)
        return 1;
    return 2; /* an answer this client does not know */
}
