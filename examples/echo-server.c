/*
 * echo-server - sends every message straight back to the client that sent
 * it, for any number of clients at once, in one thread.
 *
 *     ./echo-server 127.0.0.1:0        (default ":29876")
 *     ./echo-server --tls-cert cert.pem --tls-key key.pem 127.0.0.1:0
 *
 * With --tls-cert and --tls-key the port speaks TLS: clients verify the
 * certificate (see README.md for making one), and everything on the wire
 * is encrypted.  The messages inside are the same.
 *
 * Started by systemd with socket activation (LISTEN_FDS) and without TLS,
 * it serves the sockets systemd gives it instead.
 *
 * Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly.
 */
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <string.h>

static sm_server *server;

/* sm_server_stop is safe to call from a signal handler. */
static void on_signal(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

/* Called once per whole message.  sm_server_send never blocks: it queues
 * the reply and the server writes it when the client can take it. */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

static int usage(void)
{
    fprintf(stderr, "usage: echo-server [--tls-cert FILE --tls-key FILE] [ADDR]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *cert = NULL, *key = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            cert = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (argv[i][0] != '-' && !addr)
            addr = argv[i];
        else
            return usage();
    }
    if ((cert == NULL) != (key == NULL))
        return usage(); /* both or neither */
    if (!addr)
        addr = ":29876";
    if (cert && !sm_tls_available()) {
        fprintf(stderr, "echo-server: --tls-cert: this libsockmsg was built without TLS "
                        "(OpenSSL)\n");
        return 1;
    }

    sm_server_handlers handlers = { .on_message = on_message };
    char where[SM_ADDRSTRLEN];

    if (sm_server_new(&server, &handlers, NULL, NULL) < 0) {
        fprintf(stderr, "echo-server: %s\n", sm_last_error());
        return 1;
    }
    int rc;
    if (cert) {
        /* TLS: the server shows this certificate; the key proves it is ours. */
        sm_tls_options tls = { .cert_file = cert, .key_file = key };
        rc = sm_server_listen_tls(server, addr, &tls);
    } else {
        /* Sockets from systemd if it started us, else our own on addr. */
        rc = sm_server_listen_inherited(server);
        if (rc == 0)
            rc = sm_server_listen(server, addr);
    }
    if (rc < 0) {
        fprintf(stderr, "echo-server: %s\n", sm_last_error());
        sm_server_free(server);
        return 1;
    }
    /* Handlers first, so a signal right after the line below is handled. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sm_server_addr(server, 0, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout);

    rc = sm_server_run(server); /* returns after sm_server_stop */
    if (rc < 0)
        fprintf(stderr, "echo-server: %s\n", sm_last_error());
    sm_server_free(server);
    return rc < 0 ? 1 : 0;
}
