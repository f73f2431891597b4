/*
 * chat-server - a chat room: every message a client sends goes to all the
 * other clients, for any number of clients, on one or several ports, in
 * one thread.
 *
 *     ./chat-server 127.0.0.1:0 127.0.0.1:0     (default ":29876")
 *
 * Each client gets a small number when it connects.  What clients send:
 *
 *     hello              everyone else receives "[7] hello"
 *     /to 3 psst         only client 3 receives "[from 7] psst"
 *                        (the sender gets "no such user 3" if 3 is gone)
 *     /who               the sender receives "users: 3 7 12"
 *
 * What the server sends by itself: "you are 7" to a new client, and
 * "7 joined" / "7 left" to everyone else.  Chat lines always start with
 * '[', so a client can tell them from these notices.
 *
 * Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly.
 */
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest message a client may send.  A client sending more is
 * disconnected by the server (on_close gets SM_ETOOBIG). */
#define MAX_LINE 4096

static sm_server *server;

/* What we remember about each client.  The server keeps one pointer of
 * ours per connection: sm_server_set_data stores it, sm_server_data gives
 * it back. */
struct user {
    unsigned number; /* the short number other users see, e.g. [7] */
};

/* Numbers handed out so far.  Only the server's thread touches it. */
static unsigned last_number;

/* sm_server_stop is safe to call from a signal handler. */
static void on_signal(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

/* The number of connection `id`; every connection has one from on_open. */
static unsigned number_of(sm_server *s, sm_conn_id id)
{
    struct user *u = sm_server_data(s, id);
    return u ? u->number : 0;
}

/* Sends a text message (a C string) to one client. */
static void send_text(sm_server *s, sm_conn_id id, const char *text)
{
    sm_server_send(s, id, text, strlen(text));
}

/* Asks the server for the ids of every open connection.  Returns a
 * malloc()ed array (free() it) and stores its length in *count. */
static sm_conn_id *all_ids(sm_server *s, size_t *count)
{
    size_t n = sm_server_ids(s, NULL, 0); /* how many are open */
    sm_conn_id *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        *count = 0;
        return NULL;
    }
    *count = sm_server_ids(s, ids, n);
    return ids;
}

/* Finds the connection whose user has this number; 0 if nobody has it. */
static sm_conn_id find_user(sm_server *s, unsigned number)
{
    size_t n;
    sm_conn_id *ids = all_ids(s, &n);
    sm_conn_id found = 0;
    for (size_t i = 0; ids && i < n; i++)
        if (number && number_of(s, ids[i]) == number)
            found = ids[i];
    free(ids);
    return found;
}

static int by_value(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* "/who": one message listing every user's number, smallest first. */
static void who(sm_server *s, sm_conn_id asker)
{
    size_t n;
    sm_conn_id *ids = all_ids(s, &n);
    unsigned *numbers = malloc((n ? n : 1) * sizeof *numbers);
    /* "users:" plus at most 11 characters (" 4294967295") per user. */
    char *reply = malloc(8 + n * 11);
    if (ids && numbers && reply) {
        for (size_t i = 0; i < n; i++)
            numbers[i] = number_of(s, ids[i]);
        qsort(numbers, n, sizeof *numbers, by_value);
        size_t len = (size_t)sprintf(reply, "users:");
        for (size_t i = 0; i < n; i++)
            len += (size_t)sprintf(reply + len, " %u", numbers[i]);
        sm_server_send(s, asker, reply, len);
    }
    free(ids);
    free(numbers);
    free(reply);
}

/* "/to 3 text": send "[from 7] text" to user 3 only.  `line` is the whole
 * message as a C string. */
static void private_message(sm_server *s, sm_conn_id from, const char *line)
{
    char *end;
    unsigned long to = strtoul(line + 4, &end, 10);
    char reply[MAX_LINE + 64];

    if (end == line + 4 || (*end != ' ' && *end != '\0')) {
        send_text(s, from, "usage: /to NUMBER text");
        return;
    }
    if (*end == ' ')
        end++; /* the text starts after one space */
    sm_conn_id target = to <= 0xffffffffUL ? find_user(s, (unsigned)to) : 0;
    if (!target) {
        snprintf(reply, sizeof reply, "no such user %lu", to);
        send_text(s, from, reply);
        return;
    }
    snprintf(reply, sizeof reply, "[from %u] %s", number_of(s, from), end);
    send_text(s, target, reply);
}

static void on_open(sm_server *s, sm_conn_id id, void *arg)
{
    (void)arg;
    struct user *u = malloc(sizeof *u);
    if (!u) {
        sm_server_disconnect(s, id); /* out of memory: turn this one away */
        return;
    }
    u->number = ++last_number;
    sm_server_set_data(s, id, u);

    char text[64];
    snprintf(text, sizeof text, "you are %u", u->number);
    send_text(s, id, text);
    snprintf(text, sizeof text, "%u joined", u->number);
    sm_server_broadcast(s, text, strlen(text), id); /* everyone but id */
}

/* Called once per whole message; msg is not a C string (no '\0' at the
 * end), so copy it into one first.  Messages are treated as text: a '\0'
 * inside one ends it. */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    char line[MAX_LINE + 1];
    memcpy(line, msg, len); /* len <= MAX_LINE: see max_frame in main */
    line[len] = '\0';

    if (strcmp(line, "/who") == 0) {
        who(s, id);
    } else if (strncmp(line, "/to ", 4) == 0) {
        private_message(s, id, line);
    } else {
        char text[MAX_LINE + 32];
        snprintf(text, sizeof text, "[%u] %s", number_of(s, id), line);
        sm_server_broadcast(s, text, strlen(text), id);
    }
}

/* The connection is gone (reason says why).  Free what on_open made. */
static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)arg;
    struct user *u = sm_server_data(s, id);
    if (!u)
        return;
    /* When the whole server stops, everyone is leaving: no notices. */
    if (reason != SM_ESTOPPED) {
        char text[64];
        snprintf(text, sizeof text, "%u left", u->number);
        sm_server_broadcast(s, text, strlen(text), id);
    }
    free(u);
}

int main(int argc, char **argv)
{
    sm_server_handlers handlers = { .on_open = on_open,
                                    .on_message = on_message,
                                    .on_close = on_close };
    /* Chat lines are short: refuse anything longer than MAX_LINE. */
    sm_server_options options = { .max_frame = MAX_LINE };
    char where[SM_ADDRSTRLEN];

    if (sm_server_new(&server, &handlers, &options, NULL) < 0) {
        fprintf(stderr, "chat-server: %s\n", sm_last_error());
        return 1;
    }
    /* One sm_server can listen on many ports: call sm_server_listen once
     * per address.  With no address given, use the default. */
    int count = argc > 1 ? argc - 1 : 1;
    for (int i = 0; i < count; i++) {
        const char *addr = argc > 1 ? argv[i + 1] : ":29876";
        if (sm_server_listen(server, addr) < 0) {
            fprintf(stderr, "chat-server: %s\n", sm_last_error());
            sm_server_free(server);
            return 1;
        }
    }

    /* Catch Ctrl-C and SIGTERM before saying we are ready, so a signal
     * sent as soon as we are ready already stops us cleanly. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Print the real addresses (with port 0 the system picked them), in
     * the order given: listener index i is the i-th sm_server_listen. */
    for (int i = 0; i < count; i++) {
        sm_server_addr(server, i, where, sizeof where);
        printf("listening on %s\n", where);
    }
    fflush(stdout);

    int rc = sm_server_run(server); /* returns after sm_server_stop */
    if (rc < 0)
        fprintf(stderr, "chat-server: %s\n", sm_last_error());
    sm_server_free(server);
    return rc < 0 ? 1 : 0;
}
