/*
 * server - the tutorial's server, rebuilt on libsockmsg.
 *
 * Listens (default ":29876", every interface), accepts one client, sends it
 * the message "TEST", and exits.  Try:  ./server 127.0.0.1:0
 */
#include <sockmsg/sockmsg.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : ":29876";
    sm_listener *listener;
    sm_conn *client;
    char where[SM_ADDRSTRLEN];

    /* Python: s = socket.socket(); s.bind(('', 29876)); s.listen(5) */
    if (sm_listen(&listener, addr) < 0) {
        fprintf(stderr, "server: %s\n", sm_last_error());
        return 1;
    }
    /* Print the real address: with port 0 the system picked one. */
    sm_listener_addr(listener, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout);

    /* Python: c, addr = s.accept() */
    if (sm_accept(listener, &client) < 0) {
        fprintf(stderr, "server: %s\n", sm_last_error());
        sm_listener_close(listener);
        return 1;
    }
    /* Python: c.send(b"TEST") - but here the whole message arrives as one. */
    int rc = sm_send(client, "TEST", 4);
    if (rc < 0)
        fprintf(stderr, "server: %s\n", sm_last_error());

    /* Python: c.close(); s.close() */
    sm_close(client);
    sm_listener_close(listener);
    return rc < 0 ? 1 : 0;
}
