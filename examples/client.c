/*
 * client - the tutorial's client, rebuilt on libsockmsg.
 *
 * Connects (default "localhost:29876"), receives one message, prints it.
 *
 *     ./client 127.0.0.1:29876
 *     ./client --tls-ca cert.pem localhost:29876
 *
 * With --tls-ca the connection is TLS: the server must show a certificate
 * signed by (or equal to) the one in that file, for the host in the
 * address ("localhost" here), or the client refuses to talk to it.
 */
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *addr = NULL, *ca = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tls-ca") == 0 && i + 1 < argc)
            ca = argv[++i];
        else if (argv[i][0] != '-' && !addr)
            addr = argv[i];
        else {
            fprintf(stderr, "usage: client [--tls-ca FILE] [ADDR]\n");
            return 2;
        }
    }
    if (!addr)
        addr = "localhost:29876";
    if (ca && !sm_tls_available()) {
        fprintf(stderr, "client: --tls-ca: this libsockmsg was built without TLS (OpenSSL)\n");
        return 1;
    }

    /* Python: s = socket.socket(); s.connect(('localhost', 29876))
     * With TLS, s is wrapped first: s = ssl.create_default_context(
     * cafile=ca).wrap_socket(s, server_hostname='localhost'); here the
     * name to check is the host in addr. */
    sm_tls_options tls = { .ca_file = ca };
    sm_options options = { .tls = ca ? &tls : NULL }; /* NULL: plain TCP */
    sm_conn *conn;
    char msg[1024];
    if (sm_connect_opts(&conn, addr, &options) < 0) {
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
