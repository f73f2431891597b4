/*
 * uv-echo-server - echo-server, served from a libuv loop: what a program
 * that already runs libuv (Node-style I/O, a game, a GUI) does to add a
 * libsockmsg server to its loop.  Every message goes straight back to the
 * client that sent it, for any number of clients at once, in one thread.
 *
 *     ./uv-echo-server 127.0.0.1:0        (default ":29876")
 *
 * Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly.
 *
 * Built when libuv is installed (make deps):
 *     cc uv-echo-server.c $(pkg-config --cflags --libs sockmsg libuv)
 */
#include <signal.h>
#include <sockmsg/adapters/libuv.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <uv.h>

/* The same handler as echo-server's: sm_server_send never blocks, it
 * queues the reply and the server writes it when the client can take it. */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

/* libuv turns signals into loop callbacks, so this is ordinary code, not a
 * signal handler.  Stopping the server makes the adapter close every
 * client and stop watching; closing the signal handles leaves the loop
 * nothing to wait for, so uv_run returns. */
static uv_signal_t sigint, sigterm;

static void on_signal(uv_signal_t *handle, int signum)
{
    (void)signum;
    sm_server_stop((sm_server *)handle->data);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : ":29876";
    sm_server_handlers handlers = { .on_message = on_message };
    sm_server *server = NULL;
    char where[SM_ADDRSTRLEN];

    if (sm_server_new(&server, &handlers, NULL, NULL) < 0 || sm_server_listen(server, addr) < 0) {
        fprintf(stderr, "uv-echo-server: %s\n", sm_last_error());
        sm_server_free(server); /* NULL is fine */
        return 1;
    }

    /* Our loop, with the server attached to it: from here on libuv runs
     * the server whenever it has work. */
    uv_loop_t loop;
    sm_uv_adapter *adapter;
    uv_loop_init(&loop);
    int rc = sm_uv_attach(server, &loop, &adapter);
    if (rc < 0) {
        fprintf(stderr, "uv-echo-server: attach: %s\n", sm_strerror(rc));
        uv_loop_close(&loop);
        sm_server_free(server);
        return 1;
    }
    uv_signal_init(&loop, &sigint);
    uv_signal_init(&loop, &sigterm);
    sigint.data = sigterm.data = server;
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);

    sm_server_addr(server, 0, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout);

    uv_run(&loop, UV_RUN_DEFAULT); /* returns after the stop */

    /* Why the adapter stopped: SM_ESTOPPED is the clean way. */
    rc = sm_uv_status(adapter);
    if (rc != SM_ESTOPPED)
        fprintf(stderr, "uv-echo-server: %s\n", sm_strerror(rc));
    sm_uv_detach(adapter);
    uv_run(&loop, UV_RUN_DEFAULT); /* libuv finishes closing the handles */
    uv_loop_close(&loop);
    sm_server_free(server);
    return rc == SM_ESTOPPED ? 0 : 1;
}
