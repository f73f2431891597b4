/*
 * client - the tutorial's client, rebuilt on libsockmsg.
 *
 * Connects (default "localhost:29876"), receives one message, prints it.
 */
#include <sockmsg/sockmsg.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "localhost:29876";
    sm_conn *conn;
    char msg[1024];

    /* Python: s = socket.socket(); s.connect(('localhost', 29876)) */
    if (sm_connect(&conn, addr) < 0) {
        fprintf(stderr, "client: %s\n", sm_last_error());
        return 1;
    }
    /* Python: data = s.recv(1024) - sm_recv returns one whole message,
     * never a piece of one, however the network splits it. */
    ssize_t len = sm_recv(conn, msg, sizeof msg);
    if (len < 0) {
        fprintf(stderr, "client: %s\n", sm_last_error());
        sm_close(conn);
        return 1;
    }
    printf("%.*s\n", (int)len, msg);

    /* Python: s.close() */
    sm_close(conn);
    return 0;
}
