/*
 * robot - one program per robot.  Every robot listens for the others and
 * dials the ones it was told about; robots reboot and crash, and the
 * links come back by themselves.
 *
 *     ./robot NAME LISTEN_ADDR [PEER_ADDR ...]
 *
 *     ./robot alice 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
 *     ./robot bob   127.0.0.1:7002 127.0.0.1:7001 127.0.0.1:7003
 *     ./robot carol 127.0.0.1:7003 127.0.0.1:7001 127.0.0.1:7002
 *
 * It prints "listening on HOST:PORT" first, then a line per event:
 *
 *     alice: up bob               a link to bob is ready
 *     alice: from bob: hello      bob typed "hello"
 *     alice: down bob             the last link to bob is gone
 *
 * Each line typed on its stdin goes to every robot that is up.  Ctrl-C
 * (SIGINT) or SIGTERM stops it, with exit status 0.
 *
 * What it shows:
 *   - sm_server_connect dials a peer from the server's loop, and dials it
 *     again (with backoff: 100 ms, doubling up to 5 s) whenever the link
 *     drops.  Dialled and accepted links get the same handlers.
 *   - Our own poll() loop runs the server (sm_server_fd, sm_server_timeout,
 *     sm_server_run_once) and watches stdin too, so typing never blocks
 *     the robot and the robot never blocks typing.
 *
 * What robots say to each other, one message at a time:
 *   NAME        the first message on every link, from both ends
 *   "say TEXT"  a line typed on the sender's stdin
 *   "bye"       the sender sends nothing more on this link (see below)
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_PEERS 16  /* PEER_ADDRs on the command line */
#define MAX_LINKS 64  /* links at once, dialled and accepted */
#define NAME_LEN 64   /* longest name, with its '\0' */
#define MAX_LINE 4096 /* a longer line goes out in pieces */

/*
 * One link per pair of robots.  When alice dials bob and bob dials alice,
 * two links come up between them, and a line sent on both would arrive
 * twice.  The rule, which both robots apply on their own and so agree on:
 *
 *     Of two links between the same two robots, keep the one dialled by
 *     the robot whose name sorts first (if one robot dialled both: its
 *     older one).
 *
 * So a robot only ever retires links it dialled itself.  Here bob retires
 * the link he dialled ("alice" < "bob"), and alice waits for him to.
 *
 * Retiring loses nothing: bob stops sending on the link and sends "bye".
 * Alice answers "bye" once she has the kept link too (until then she goes
 * on sending on this one: bob still reads it), and sends nothing more on
 * it.  Bob, on her answer, knows nothing more will come and disconnects
 * the link (sm_server_disconnect: the server does not dial it again).
 *
 * Bob no longer dials alice, so when the kept link drops (alice crashed),
 * he dials her address again: a restarted alice that was not told bob's
 * address would otherwise never hear from him.
 */

struct dial;

/* Ours, one per link: the server keeps a pointer to it for us
 * (sm_server_set_data), so every handler finds it from the id. */
struct link {
    int used;
    sm_conn_id id;
    struct dial *dial;   /* the PEER_ADDR we dial it for; NULL: accepted */
    char name[NAME_LEN]; /* the peer's name; "" until its first message */
    unsigned long order; /* when it got its name: the older link wins ties */
    int said_bye;        /* we send nothing more on it */
    int got_bye;         /* the peer sends nothing more on it */
};

/* One per PEER_ADDR. */
struct dial {
    const char *addr;
    struct link *link;   /* the link we dial there; NULL once retired */
    char name[NAME_LEN]; /* who answered there last */
    int is_me;           /* it was ourselves: never dial it again */
};

static const char *my_name;
static sm_server *server;
static struct link links[MAX_LINKS];
static struct dial dials[MAX_PEERS];
static int ndials;
static unsigned long names_seen;

/* sm_server_stop is safe to call from a signal handler, and it wakes the
 * loop: sm_server_fd turns readable and sm_server_run_once says
 * SM_ESTOPPED. */
static void on_signal(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

/* Prints one "NAME: ..." line, flushed, so a pipe sees it at once. */
__attribute__((format(printf, 1, 2))) static void print_line(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", my_name);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void send_text(sm_conn_id id, const char *text)
{
    sm_server_send(server, id, text, strlen(text));
}

/* A link to name, other than `except`, that has said its name. */
static int is_up(const char *name, const struct link *except)
{
    for (int i = 0; i < MAX_LINKS; i++)
        if (links[i].used && &links[i] != except && strcmp(links[i].name, name) == 0)
            return 1;
    return 0;
}

/* A link that has its name and that neither end retires. */
static int live(const struct link *l)
{
    return l->used && l->name[0] && !l->said_bye && !l->got_bye;
}

/* The link that carries our lines to name: a live one, else one the peer
 * retires but still reads (we have not said "bye" on it); NULL if none. */
static struct link *link_to(const char *name)
{
    struct link *spare = NULL;
    for (int i = 0; i < MAX_LINKS; i++) {
        struct link *l = &links[i];
        if (live(l) && strcmp(l->name, name) == 0)
            return l;
        if (!spare && l->used && !l->said_bye && strcmp(l->name, name) == 0)
            spare = l;
    }
    return spare;
}

static struct link *new_link(sm_conn_id id, struct dial *d)
{
    for (int i = 0; i < MAX_LINKS; i++)
        if (!links[i].used) {
            links[i] = (struct link){ .used = 1, .id = id, .dial = d };
            sm_server_set_data(server, id, &links[i]);
            return &links[i];
        }
    return NULL;
}

/* Dials d->addr.  The server keeps the link: it dials again whenever the
 * link drops, under the same id, until we sm_server_disconnect it. */
static int dial(struct dial *d)
{
    sm_conn_id id;
    if (sm_server_connect(server, d->addr, NULL, &id) < 0) {
        fprintf(stderr, "robot: %s\n", sm_last_error());
        return -1;
    }
    d->link = new_link(id, d);
    if (!d->link) {
        fprintf(stderr, "robot: %s: too many links\n", d->addr);
        sm_server_disconnect(server, id); /* not up yet: freed at once */
        return -1;
    }
    return 0;
}

/* Ends a link for good.  A dialled one is not dialled again. */
static void drop(struct link *l)
{
    if (l->dial && l->dial->link == l)
        l->dial->link = NULL;
    sm_server_disconnect(server, l->id); /* on_close follows (reason 0) */
}

/* The rule above, for a link l that we dialled: whether k, another link
 * to the same robot, is kept rather than l. */
static int preferred(const struct link *k, const struct link *l)
{
    if (!k->dial)                            /* the peer dialled k... */
        return strcmp(l->name, my_name) < 0; /* ...and its name sorts first */
    return k->order < l->order;              /* we dialled both: the older */
}

/* Starts retiring every link to name that we dialled and the rule does
 * not keep. */
static void retire_duplicates(const char *name)
{
    for (int i = 0; i < MAX_LINKS; i++) {
        struct link *l = &links[i];
        if (!live(l) || !l->dial || strcmp(l->name, name) != 0)
            continue;
        for (int j = 0; j < MAX_LINKS; j++) {
            const struct link *k = &links[j];
            if (k != l && live(k) && strcmp(k->name, name) == 0 && preferred(k, l)) {
                l->said_bye = 1;
                send_text(l->id, "bye");
                break;
            }
        }
    }
}

/* Answers "bye" on the links to name that the peer retires, once a live
 * link to name is there to take our lines instead. */
static void answer_byes(const char *name)
{
    const struct link *keep = link_to(name);
    if (!keep || !live(keep))
        return; /* not yet: this is still the only way to name */
    for (int i = 0; i < MAX_LINKS; i++) {
        struct link *l = &links[i];
        if (l->used && l->got_bye && !l->said_bye && strcmp(l->name, name) == 0) {
            l->said_bye = 1;
            send_text(l->id, "bye");
        }
    }
}

/* The first message on a link: the peer's name. */
static void got_name(struct link *l, const char *msg, size_t len)
{
    char name[NAME_LEN];
    if (len == 0 || len >= NAME_LEN || memchr(msg, '\0', len)) {
        fprintf(stderr, "robot: %s: a peer sent no proper name; link dropped\n", my_name);
        drop(l);
        return;
    }
    memcpy(name, msg, len);
    name[len] = '\0';
    if (strcmp(name, my_name) == 0) {
        /* We dialled our own address, or two robots share a name. */
        fprintf(stderr, "robot: %s: a link to a robot named %s (myself?); dropped\n", my_name,
                name);
        if (l->dial)
            l->dial->is_me = 1;
        drop(l);
        return;
    }
    int was_up = is_up(name, l);
    memcpy(l->name, name, len + 1);
    l->order = ++names_seen;
    if (l->dial)
        memcpy(l->dial->name, name, len + 1);
    if (!was_up) {
        print_line("up %s", name);
        return;
    }
    retire_duplicates(name);
    answer_byes(name);
}

/* "bye": the peer sends nothing more on l.  On a link we dialled, it is
 * the answer to ours: disconnect it.  On one the peer dialled, answer when
 * we can (answer_byes); the peer then disconnects it. */
static void got_bye(struct link *l)
{
    l->got_bye = 1;
    if (!l->dial) {
        answer_byes(l->name);
        return;
    }
    if (!l->said_bye) { /* not by our rule, but answer all the same */
        l->said_bye = 1;
        send_text(l->id, "bye");
    }
    drop(l); /* our "bye" is queued: it goes out before the close */
}

/* A link is up (dialled or accepted): the first thing we say is our name. */
static void on_open(sm_server *s, sm_conn_id id, void *arg)
{
    (void)arg;
    /* A dialled link has its struct since we dialled; an accepted one
     * gets one now. */
    if (!sm_server_data(s, id) && !new_link(id, NULL)) {
        sm_server_disconnect(s, id); /* too many links: turn it away */
        return;
    }
    send_text(id, my_name);
}

static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    struct link *l = sm_server_data(s, id);
    if (!l)
        return;
    if (!l->name[0])
        got_name(l, msg, len);
    else if (len == 3 && memcmp(msg, "bye", 3) == 0)
        got_bye(l);
    else if (len >= 4 && memcmp(msg, "say ", 4) == 0) {
        printf("%s: from %s: ", my_name, l->name);
        fwrite((const char *)msg + 4, 1, len - 4, stdout);
        putchar('\n');
        fflush(stdout);
    }
    /* Anything else is from a newer robot than us: ignored. */
}

/* A link is gone.  A dialled link we still want keeps its struct and its
 * id (the server dials it again); any other link's struct is freed. */
static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)arg;
    struct link *l = sm_server_data(s, id);
    if (!l)
        return;
    char name[NAME_LEN];
    memcpy(name, l->name, sizeof name);
    if (l->dial && l->dial->link == l)
        *l = (struct link){ .used = 1, .id = id, .dial = l->dial };
    else
        l->used = 0;

    /* Stopping: everybody goes at once, nothing to report. */
    if (reason == SM_ESTOPPED || !name[0] || is_up(name, NULL))
        return;
    print_line("down %s", name);
    /* The robots we stopped dialling because another link reached them
     * (see the rule above): that link is gone, so dial them again. */
    for (int i = 0; i < ndials; i++)
        if (!dials[i].link && !dials[i].is_me && strcmp(dials[i].name, name) == 0)
            dial(&dials[i]);
}

/* Sends one line to every robot that is up, on one link per robot. */
static void send_line(const char *text, size_t len)
{
    char msg[5 + MAX_LINE]; /* "say ", the line, snprintf's '\0' */
    int n = snprintf(msg, sizeof msg, "say %.*s", (int)len, text);
    for (int i = 0; i < MAX_LINKS; i++)
        if (links[i].used && links[i].name[0] && link_to(links[i].name) == &links[i])
            sm_server_send(server, links[i].id, msg, (size_t)n);
}

/* What stdin gave us so far: in[0..in_len), not yet a whole line. */
static char in[MAX_LINE];
static size_t in_len;

/* Reads what stdin has (poll said it would not block) and sends every
 * whole line.  Returns 0 at the end of stdin. */
static int read_stdin(void)
{
    ssize_t n = read(STDIN_FILENO, in + in_len, sizeof in - in_len);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN;
    if (n == 0) {
        if (in_len > 0) /* a last line without '\n' */
            send_line(in, in_len);
        in_len = 0;
        return 0;
    }
    in_len += (size_t)n;
    char *start = in, *nl;
    while ((nl = memchr(start, '\n', in_len - (size_t)(start - in))) != NULL) {
        send_line(start, (size_t)(nl - start));
        start = nl + 1;
    }
    in_len -= (size_t)(start - in);
    memmove(in, start, in_len);
    if (in_len == sizeof in) { /* no '\n' in MAX_LINE bytes: send a piece */
        send_line(in, in_len);
        in_len = 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc - 3 > MAX_PEERS || !argv[1][0] || strlen(argv[1]) >= NAME_LEN) {
        fprintf(stderr,
                "usage: robot NAME LISTEN_ADDR [PEER_ADDR ...]  (at most %d peers, names of 1 "
                "to %d bytes)\n",
                MAX_PEERS, NAME_LEN - 1);
        return 2;
    }
    my_name = argv[1];
    sm_server_handlers handlers = { .on_open = on_open,
                                    .on_message = on_message,
                                    .on_close = on_close };
    /* Nothing we say is longer than a line: refuse anything that is. */
    sm_server_options options = { .max_frame = 4 + MAX_LINE };
    char where[SM_ADDRSTRLEN];
    if (sm_server_new(&server, &handlers, &options, NULL) < 0 ||
        sm_server_listen(server, argv[2]) < 0) {
        fprintf(stderr, "robot: %s\n", sm_last_error());
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

    /* Dial every peer.  This never waits: the tries run in the loop. */
    for (int i = 3; i < argc; i++) {
        dials[ndials].addr = argv[i];
        if (dial(&dials[ndials++]) < 0) {
            sm_server_free(server);
            return 1;
        }
    }

    /* The loop: sleep until the server or stdin has something, or the
     * server's next deadline (a retry, a timer), then let the server do
     * what is ready.  A line read from stdin is queued by sm_server_send;
     * sm_server_timeout is then 0, so the next turn writes it at once. */
    int stdin_open = 1, status = 0;
    for (;;) {
        struct pollfd fds[2] = {
            { .fd = sm_server_fd(server), .events = POLLIN },
            { .fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN },
        };
        if (poll(fds, 2, sm_server_timeout(server)) < 0 && errno != EINTR) {
            perror("robot: poll");
            status = 1;
            break;
        }
        if (fds[1].revents)
            stdin_open = read_stdin(); /* at its end, the robot goes on */
        int rc = sm_server_run_once(server, 0);
        if (rc == SM_ESTOPPED)
            break; /* SIGINT or SIGTERM: every link is closed now */
        if (rc < 0) {
            fprintf(stderr, "robot: %s\n", sm_strerror(rc));
            status = 1;
            break;
        }
    }
    sm_server_free(server);
    return status;
}
