/* smcat: the modes (see smcat.h): --connect, --listen (one client), and
 * --listen --echo (any number of clients, on libsockmsg's event server). */
#include "smcat.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* --retry: libsockmsg's sm_connect_retry tries again while nobody listens
 * yet (refused, no such Unix socket, unreachable, timed out), waiting
 * from 100 ms, doubling with jitter up to 5 s, until it connects or
 * --timeout has passed.  Each try is bounded by --timeout too. */
static int connect_retrying(const struct config *cfg, sm_options *opt, sm_conn **conn)
{
    if (cfg->verbose)
        complain(0, "connecting to %s, trying again until it works%s", cfg->connect,
                 cfg->timeout_ms ? " or --timeout passes" : "");
    opt->connect_timeout_ms = cfg->timeout_ms;
    int64_t start = now_ms();
    int rc = sm_connect_retry(conn, cfg->connect, opt, cfg->timeout_ms);
    if (rc == 0)
        return 0;
    /* It gives up early only on errors a retry cannot mend (a bad
     * address, say); at the deadline, the last try's error is kept. */
    if (cfg->timeout_ms && now_ms() - start >= cfg->timeout_ms)
        return complain(EXIT_TIMEOUT, "gave up after %d ms (--timeout): %s", cfg->timeout_ms,
                        sm_last_error());
    return complain(exit_for_setup(rc), "%s", sm_last_error());
}

int run_connect(const struct config *cfg)
{
    sm_options opt = { .recv_timeout_ms = cfg->recv_timeout_ms, .max_frame = cfg->max_frame };
    if (cfg->tls_on)
        opt.tls = &cfg->tls; /* the handshake is part of connecting */
    sm_conn *conn;
    int rc;
    if (cfg->retry) {
        if ((rc = connect_retrying(cfg, &opt, &conn)) != 0)
            return rc;
    } else {
        opt.connect_timeout_ms = cfg->timeout_ms;
        if ((rc = sm_connect_opts(&conn, cfg->connect, &opt)) < 0)
            return complain(exit_for_setup(rc), "%s", sm_last_error());
    }
    return run_session(cfg, conn, "connected to");
}

static void say_listening(const struct config *cfg, const char *where)
{
    if (!cfg->quiet)
        complain(0, "listening on %s", where);
}

int run_listen_one(const struct config *cfg)
{
    sm_options opt = { .accept_timeout_ms = cfg->timeout_ms,
                       .recv_timeout_ms = cfg->recv_timeout_ms,
                       .max_frame = cfg->max_frame };
    if (cfg->tls_on)
        opt.tls = &cfg->tls; /* sm_accept makes the handshake */
    sm_listener *l;
    sm_conn *conn;
    char where[SM_ADDRSTRLEN];
    int rc = sm_listen_opts(&l, cfg->listen, &opt);
    if (rc < 0)
        return complain(exit_for_setup(rc), "%s", sm_last_error());
    if (sm_listener_addr(l, where, sizeof where) < 0)
        snprintf(where, sizeof where, "%s", cfg->listen);
    say_listening(cfg, where);
    rc = sm_accept(l, &conn);
    if (rc < 0) {
        int code = rc == SM_ETIMEDOUT ? complain(EXIT_TIMEOUT, "no client within %d ms (--timeout)",
                                                 cfg->timeout_ms)
                                      : complain(exit_for_setup(rc), "%s", sm_last_error());
        sm_listener_close(l);
        return code;
    }
    /* One client, like nc -l: nobody else can connect from now on. */
    sm_listener_close(l);
    return run_session(cfg, conn, "connection from");
}

/* --- echo server --- */

static sm_server *echo_server;
static bool echo_verbose;

/* sm_server_stop is async-signal-safe: the loop returns soon after. */
static void on_signal(int sig)
{
    (void)sig;
    sm_server_stop(echo_server);
}

static void echo_open(sm_server *s, sm_conn_id id, void *arg)
{
    (void)arg;
    if (!echo_verbose)
        return;
    char *peer = malloc(SM_ADDRSTRLEN);
    if (peer && sm_server_peer(s, id, peer, SM_ADDRSTRLEN) < 0)
        snprintf(peer, SM_ADDRSTRLEN, "client %llu", (unsigned long long)id);
    /* Kept for the disconnect line: the socket may be gone by then. */
    sm_server_set_data(s, id, peer);
    complain(0, "connection from %s", peer ? peer : "a client");
    char subject[256];
    if (sm_server_peer_cert(s, id, subject, sizeof subject) > 0)
        complain(0, "%s: verified client certificate %s", peer ? peer : "a client", subject);
}

static void echo_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    atomic_fetch_add(&bytes_in, len);
    int rc = sm_server_send(s, id, msg, len);
    if (rc == 0) {
        atomic_fetch_add(&bytes_out, len);
        return;
    }
    const char *peer = sm_server_data(s, id);
    if (echo_verbose)
        complain(0, "%s: cannot echo: %s; disconnecting", peer ? peer : "client", sm_strerror(rc));
    sm_server_disconnect(s, id);
}

static void echo_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)arg;
    char *peer = sm_server_data(s, id);
    if (echo_verbose)
        complain(0, "%s disconnected: %s", peer ? peer : "a client",
                 reason ? sm_strerror(reason) : "closed by smcat");
    free(peer);
}

int run_echo(const struct config *cfg)
{
    sm_server_handlers h = { .on_open = echo_open,
                             .on_message = echo_message,
                             .on_close = echo_close };
    sm_server_options opt = { .max_frame = cfg->max_frame,
                              .idle_timeout_ms = cfg->recv_timeout_ms };
    char where[SM_ADDRSTRLEN];
    echo_verbose = cfg->verbose;
    int rc = sm_server_new(&echo_server, &h, &opt, NULL);
    if (rc < 0)
        return complain(EXIT_FAIL, "%s", sm_last_error());
    rc = cfg->tls_on ? sm_server_listen_tls(echo_server, cfg->listen, &cfg->tls)
                     : sm_server_listen(echo_server, cfg->listen);
    if (rc < 0) {
        int code = complain(exit_for_setup(rc), "%s", sm_last_error());
        sm_server_free(echo_server);
        return code;
    }
    /* Handlers first, so a signal right after the line below is handled. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (sm_server_addr(echo_server, 0, where, sizeof where) < 0)
        snprintf(where, sizeof where, "%s", cfg->listen);
    say_listening(cfg, where);

    int stop[2];
    struct progress prog = { .running = false };
    bool have_pipe = pipe(stop) == 0;
    if (have_pipe)
        progress_start(&prog, cfg, stop[0]);
    rc = sm_server_run(echo_server);
    if (rc < 0)
        complain(EXIT_FAIL, "%s", sm_last_error());
    if (have_pipe) {
        if (write(stop[1], "x", 1) < 0) {
            /* Cannot fail on a fresh, empty pipe. */
        }
        progress_finish(&prog);
        close(stop[0]);
        close(stop[1]);
    }
    sm_server_free(echo_server);
    return rc < 0 ? EXIT_FAIL : EXIT_OK;
}
