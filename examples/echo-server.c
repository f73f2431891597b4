/*
 * echo-server - sends every message straight back to the client that sent
 * it, for any number of clients at once, in one thread.
 *
 *     ./echo-server 127.0.0.1:0        (default ":29876")
 *
 * Started by systemd with socket activation (LISTEN_FDS), it serves the
 * sockets systemd gives it instead.
 *
 * Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly.
 */
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>

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

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : ":29876";
    sm_server_handlers handlers = { .on_message = on_message };
    char where[SM_ADDRSTRLEN];

    if (sm_server_new(&server, &handlers, NULL, NULL) < 0) {
        fprintf(stderr, "echo-server: %s\n", sm_last_error());
        return 1;
    }
    /* Sockets from systemd if it started us, else our own on addr. */
    int inherited = sm_server_listen_inherited(server);
    if (inherited < 0 || (inherited == 0 && sm_server_listen(server, addr) < 0)) {
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

    int rc = sm_server_run(server); /* returns after sm_server_stop */
    if (rc < 0)
        fprintf(stderr, "echo-server: %s\n", sm_last_error());
    sm_server_free(server);
    return rc < 0 ? 1 : 0;
}
