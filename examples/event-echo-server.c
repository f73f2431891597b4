/*
 * event-echo-server - echo-server, served from a libevent loop: what a
 * program that already runs libevent does to add a libsockmsg server to
 * its event base.  Every message goes straight back to the client that
 * sent it, for any number of clients at once, in one thread.
 *
 *     ./event-echo-server 127.0.0.1:0        (default ":29876")
 *
 * Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly.
 *
 * Built when libevent is installed (make deps):
 *     cc event-echo-server.c $(pkg-config --cflags --libs sockmsg libevent_core)
 */
#include <event2/event.h>
#include <signal.h>
#include <sockmsg/adapters/libevent.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>

/* The same handler as echo-server's: sm_server_send never blocks, it
 * queues the reply and the server writes it when the client can take it. */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    sm_server_send(s, id, msg, len);
}

/* libevent turns signals into loop callbacks, so this is ordinary code,
 * not a signal handler.  Stopping the server makes the adapter close
 * every client and remove its events; removing the signal events leaves
 * the loop nothing to wait for, so event_base_dispatch returns. */
static struct event *sigint, *sigterm;

static void on_signal(evutil_socket_t signum, short what, void *arg)
{
    (void)signum;
    (void)what;
    sm_server_stop((sm_server *)arg);
    event_del(sigint);
    event_del(sigterm);
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : ":29876";
    sm_server_handlers handlers = { .on_message = on_message };
    sm_server *server = NULL;
    char where[SM_ADDRSTRLEN];

    if (sm_server_new(&server, &handlers, NULL, NULL) < 0 || sm_server_listen(server, addr) < 0) {
        fprintf(stderr, "event-echo-server: %s\n", sm_last_error());
        sm_server_free(server); /* NULL is fine */
        return 1;
    }

    /* Our event base, with the server attached to it: from here on
     * libevent runs the server whenever it has work. */
    struct event_base *base = event_base_new();
    sm_event_adapter *adapter = NULL;
    int rc = base ? sm_event_attach(server, base, &adapter) : SM_ENOMEM;
    if (rc == 0) {
        sigint = evsignal_new(base, SIGINT, on_signal, server);
        sigterm = evsignal_new(base, SIGTERM, on_signal, server);
        if (!sigint || !sigterm || event_add(sigint, NULL) < 0 || event_add(sigterm, NULL) < 0)
            rc = SM_ENOMEM;
    }
    if (rc == 0) {
        sm_server_addr(server, 0, where, sizeof where);
        printf("listening on %s\n", where);
        fflush(stdout);

        event_base_dispatch(base); /* returns after the stop */

        /* Why the adapter stopped: SM_ESTOPPED is the clean way. */
        rc = sm_event_status(adapter);
    }
    if (rc != SM_ESTOPPED)
        fprintf(stderr, "event-echo-server: %s\n", sm_strerror(rc));

    sm_event_detach(adapter); /* NULL is fine */
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (base)
        event_base_free(base);
    sm_server_free(server);
    return rc == SM_ESTOPPED ? 0 : 1;
}
