/*
 * login-server - checks user names and passwords against a users file.
 *
 *     ./login-server --add alice users.txt   add a user (asks for the password)
 *     ./login-server --tls-cert cert.pem --tls-key key.pem 127.0.0.1:0 users.txt
 *                                            serve (default address ":29876")
 *
 * With --tls-cert and --tls-key, clients connect over TLS (login-client
 * --tls-ca cert.pem): the password travels encrypted, to a server whose
 * certificate the client checked.  Without them it crosses the network as
 * plain, readable bytes that anyone watching the traffic can read: the
 * server says so when it starts.  Use plain only on loopback or over
 * "unix:/path".  README.md shows how to make a certificate.
 *
 * The users file has one line per user, "name:hash", where hash is what
 * crypt_r() made from the password and a fresh random salt (yescrypt,
 * "$y$...").  The password itself is never written anywhere.  If a name
 * appears twice, the later line wins, so --add again changes a password.
 * Without a file name, --add prints the line instead.
 *
 * --add takes the password from the environment variable SM_PASSWORD if it
 * is set, otherwise asks on the terminal without showing what you type.
 *
 * The protocol: each request is one message, the user name, one '\0'
 * byte, then the password (which may hold any byte but '\0', spaces and
 * ':' included).  The answer is one message: "OK" or "DENIED".  An unknown
 * user, a wrong password and a malformed request all get "DENIED", and an
 * unknown user costs a hash too, so the answer's timing does not tell
 * which names exist.
 *
 * Hashing is deliberately slow (about 20 ms) to make guessing expensive,
 * so it does not happen in the event loop, which must never block: the
 * loop hands each request to one of WORKERS threads, and the worker
 * hands the answer back with sm_server_post (the loop sends it).  While
 * workers hash, the loop keeps serving every other client.
 *
 * One client, one request at a time: a client may have two requests
 * unanswered, one being checked and one waiting, which are answered in
 * order.  A client that sends a third before the first is answered is
 * disconnected: the server cannot stop reading from it, and queuing all
 * its requests would let one client keep every worker busy and grow the
 * server's memory.  login-client sends one request and waits.
 *
 * Build with -lcrypt -pthread.  Ctrl-C (SIGINT) or SIGTERM shuts it down
 * cleanly.
 */
#include <crypt.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAME 64
#define MAX_PASSWORD 1024
#define MAX_REQUEST (MAX_NAME + 1 + MAX_PASSWORD) /* name '\0' password */
#define HASH_PREFIX "$y$"                         /* yescrypt; "$6$" would pick SHA-512 */
#define WORKERS 4                                 /* threads that hash passwords */
#define POST_TRIES 100   /* sm_server_post: tries while its queue is full, */
#define POST_PAUSE_MS 10 /* with this pause between two */

static sm_server *server;
static const char *users_file;

/* A hash of a random password, checked when the user is unknown, so that
 * answering "no such user" takes as long as "wrong password". */
static char dummy_hash[CRYPT_OUTPUT_SIZE];

/* crypt_r's working memory, one per worker.  It is large (about 32 KiB
 * each), so it is not on the stack. */
static struct crypt_data crypt_work[WORKERS];

/* What the server keeps for one client (sm_server_set_data).  The loop
 * and the workers share it: they look at it with `lock` held, except
 * request[0] while a worker checks it: then only that worker touches it. */
struct client {
    sm_conn_id id;
    int pending;                      /* requests received and not answered yet: 0, 1 or 2 */
    int gone;                         /* the connection closed; whoever holds it last frees it */
    char request[2][MAX_REQUEST + 1]; /* [0] is checked, [1] waits */
    size_t len[2];
    struct client *queue_next; /* in the workers' queue */
};

/* The workers' queue: clients whose request[0] waits for a worker. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_to_do = PTHREAD_COND_INITIALIZER;
static struct client *queue_head, *queue_tail;
static int stopping; /* set at shutdown: workers finish the queue, then end */

/* sm_server_stop is safe to call from a signal handler. */
static void on_signal(int sig)
{
    (void)sig;
    sm_server_stop(server);
}

/* Reads a password into buf: from $SM_PASSWORD if set, otherwise one line
 * from the terminal with echo turned off.  Returns 0, or -1. */
static int read_password(const char *prompt, char *buf, size_t size)
{
    const char *env = getenv("SM_PASSWORD");
    if (env) {
        if (strlen(env) >= size)
            return -1;
        snprintf(buf, size, "%s", env);
        return 0;
    }

    struct termios saved, quiet;
    int terminal = tcgetattr(STDIN_FILENO, &saved) == 0;
    if (terminal) {
        fputs(prompt, stderr);
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO; /* do not show what is typed */
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = fgets(buf, (int)size, stdin);
    if (terminal) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved); /* echo back on */
        fputc('\n', stderr);                        /* the Enter key was not echoed either */
    }
    if (!line)
        return -1;
    buf[strcspn(buf, "\n")] = '\0'; /* drop the newline */
    return 0;
}

/* A user name may not hold ':' (it ends the name in the file), control
 * characters (newline would end the line) or be empty. */
static int valid_name(const char *name, size_t len)
{
    if (len == 0 || len > MAX_NAME)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch == ':' || ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* Hashes password with a fresh random salt into out (CRYPT_OUTPUT_SIZE
 * bytes).  Returns 0, or -1.  Called before the workers start. */
static int hash_new(const char *password, char *out)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *work = &crypt_work[0];
    /* NULL random bytes: libcrypt takes them from the operating system. */
    if (!crypt_gensalt_rn(HASH_PREFIX, 0, NULL, 0, salt, sizeof salt))
        return -1;
    const char *hash = crypt_r(password, salt, work);
    int ok = hash && hash[0] != '*'; /* "*..." means crypt_r failed */
    if (ok)
        snprintf(out, CRYPT_OUTPUT_SIZE, "%s", hash);
    explicit_bzero(work, sizeof *work); /* it saw the password */
    return ok ? 0 : -1;
}

/* 1 if a and b are equal.  Looks at every byte whatever it finds, so the
 * time taken does not tell how much of a guess was right. */
static int same_string(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* 1 if password hashes to stored.  Re-hashing with the stored hash as the
 * "setting" reuses its algorithm, cost and salt. */
static int password_matches(const char *password, const char *stored, struct crypt_data *work)
{
    if (stored[0] != '$') /* not a modern hash: never accept */
        return 0;
    const char *hash = crypt_r(password, stored, work);
    int ok = hash && hash[0] != '*' && same_string(hash, stored);
    explicit_bzero(work, sizeof *work);
    return ok;
}

/* Finds name's hash in the users file (the last line for it wins).
 * Returns 1 and fills hash (CRYPT_OUTPUT_SIZE bytes) if found, else 0.
 * The file is read on every request, so users added later count. */
static int find_hash(const char *name, char *hash)
{
    FILE *f = fopen(users_file, "r");
    if (!f) {
        perror(users_file);
        return 0;
    }
    char line[MAX_NAME + CRYPT_OUTPUT_SIZE + 8];
    size_t name_len = strlen(name);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, name, name_len) == 0 && line[name_len] == ':' &&
            strlen(line + name_len + 1) < CRYPT_OUTPUT_SIZE) {
            snprintf(hash, CRYPT_OUTPUT_SIZE, "%s", line + name_len + 1);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* Checks one request, "name\0password" (len bytes, then a '\0' we
 * added), on a worker thread.  Returns 1 for a right password, else 0, and
 * wipes the request. */
static int check_request(char *request, size_t len, struct crypt_data *work)
{
    char hash[CRYPT_OUTPUT_SIZE];
    const char *name = request;
    size_t name_len = strlen(name);
    const char *password = request + name_len + 1;
    int ok = 0;

    /* Well formed: exactly one '\0', after a valid name. */
    if (name_len < len && memchr(password, '\0', len - name_len - 1) == NULL &&
        valid_name(name, name_len)) {
        if (find_hash(name, hash))
            ok = password_matches(password, hash, work);
        else
            password_matches(password, dummy_hash, work); /* same time, no answer */
        /* Log who tried and the outcome - never the password. */
        fprintf(stderr, "login-server: %s: %s\n", name, ok ? "OK" : "DENIED");
    }
    explicit_bzero(request, len); /* forget the password */
    return ok;
}

/* Hands an answer to the loop thread, which sends it.  sm_server_post says
 * SM_EFULL while the loop has too many posts to take in: pause, retry, and
 * give up after POST_TRIES (the client then never gets this answer). */
static void post_answer(sm_conn_id id, const char *answer)
{
    for (int i = 0; i < POST_TRIES; i++) {
        int rc = sm_server_post(server, id, answer, strlen(answer));
        if (rc == 0)
            return;
        if (rc != SM_EFULL)
            break;
        struct timespec pause = { .tv_nsec = POST_PAUSE_MS * 1000000L };
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "login-server: no answer for client %llu: %s\n", (unsigned long long)id,
            sm_last_error());
}

/* Adds c to the end of the workers' queue and wakes one.  Needs `lock`. */
static void queue_push(struct client *c)
{
    c->queue_next = NULL;
    if (queue_tail)
        queue_tail->queue_next = c;
    else
        queue_head = c;
    queue_tail = c;
    pthread_cond_signal(&work_to_do);
}

/* Waits for a client with a request to check; NULL once the server stops
 * and the queue is empty. */
static struct client *queue_pop(void)
{
    pthread_mutex_lock(&lock);
    while (!queue_head && !stopping)
        pthread_cond_wait(&work_to_do, &lock);
    struct client *c = queue_head;
    if (c) {
        queue_head = c->queue_next;
        if (!queue_head)
            queue_tail = NULL;
    }
    pthread_mutex_unlock(&lock);
    return c;
}

static void free_client(struct client *c)
{
    explicit_bzero(c, sizeof *c); /* a waiting request holds a password */
    free(c);
}

/* c's request[0] is answered: moves its waiting request up and returns 1,
 * or returns 0 if none waits (and frees c if the client is gone).  Needs
 * `lock`. */
static int next_request(struct client *c)
{
    c->pending--;
    if (c->pending == 0) {
        if (c->gone)
            free_client(c);
        return 0;
    }
    memcpy(c->request[0], c->request[1], c->len[1] + 1);
    c->len[0] = c->len[1];
    explicit_bzero(c->request[1], sizeof c->request[1]);
    return 1;
}

/* A worker: takes a client from the queue and answers its requests, in
 * order, until none waits.  The hash, the slow part, runs without the
 * lock, so the loop and the other workers carry on meanwhile. */
static void *worker_main(void *arg)
{
    struct crypt_data *work = arg;
    struct client *c;
    while ((c = queue_pop()) != NULL) {
        sm_conn_id id = c->id;
        int more = 1;
        while (more) {
            pthread_mutex_lock(&lock);
            int gone = c->gone; /* then nobody waits for the answer: no hash */
            pthread_mutex_unlock(&lock);
            int ok = !gone && check_request(c->request[0], c->len[0], work);

            /* Count the request as answered before the answer leaves, so
             * a client that sends two more as soon as it reads it is
             * within its limit. */
            pthread_mutex_lock(&lock);
            more = next_request(c); /* after 0, c may be freed */
            pthread_mutex_unlock(&lock);
            if (!gone)
                post_answer(id, ok ? "OK" : "DENIED");
        }
    }
    return NULL;
}

static void on_open(sm_server *s, sm_conn_id id, void *arg)
{
    (void)arg;
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        sm_server_disconnect(s, id); /* out of memory: cannot serve it */
        return;
    }
    c->id = id;
    sm_server_set_data(s, id, c);
}

/* One request: "name\0password".  A worker answers "OK" or "DENIED". */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    struct client *c = sm_server_data(s, id);
    if (!c)
        return;
    pthread_mutex_lock(&lock);
    int n = c->pending;
    if (n < 2) {
        /* Copy it (msg is gone after we return) and add a '\0': then the
         * name and the password are both C strings. */
        memcpy(c->request[n], msg, len); /* len fits: see max_frame in main */
        c->request[n][len] = '\0';
        c->len[n] = len;
        c->pending++;
        if (n == 0)
            queue_push(c); /* else the worker with its first one takes it next */
    }
    pthread_mutex_unlock(&lock);
    if (n == 2) {
        fprintf(stderr,
                "login-server: client %llu sent a third request before its first was "
                "answered; disconnected\n",
                (unsigned long long)id);
        sm_server_disconnect(s, id);
    }
}

/* The client left.  Free its data, unless a worker still holds it. */
static void on_close(sm_server *s, sm_conn_id id, int reason, void *arg)
{
    (void)reason, (void)arg;
    struct client *c = sm_server_data(s, id);
    if (!c)
        return;
    pthread_mutex_lock(&lock);
    c->gone = 1;
    if (c->pending == 0)
        free_client(c);
    pthread_mutex_unlock(&lock);
}

/* --add NAME [FILE]: append "NAME:hash" to FILE, or print it. */
static int add_user(const char *name, const char *file)
{
    char password[MAX_PASSWORD + 2], again[MAX_PASSWORD + 2];
    char hash[CRYPT_OUTPUT_SIZE];
    char line[MAX_NAME + CRYPT_OUTPUT_SIZE + 8];
    int rc = 2;

    if (!valid_name(name, strlen(name))) {
        fprintf(stderr, "login-server: bad user name (1-%d characters, no ':')\n", MAX_NAME);
        return 2;
    }
    if (read_password("Password: ", password, sizeof password) < 0 ||
        strlen(password) > MAX_PASSWORD) {
        fprintf(stderr, "login-server: no password read (at most %d bytes)\n", MAX_PASSWORD);
        goto out;
    }
    /* Typing blind: on a terminal, ask twice. */
    if (!getenv("SM_PASSWORD") && isatty(STDIN_FILENO)) {
        if (read_password("Again: ", again, sizeof again) < 0 || strcmp(password, again) != 0) {
            fprintf(stderr, "login-server: the passwords differ\n");
            goto out;
        }
    }
    if (password[0] == '\0') {
        fprintf(stderr, "login-server: empty password\n");
        goto out;
    }
    if (hash_new(password, hash) < 0) {
        perror("login-server: crypt");
        goto out;
    }
    int len = snprintf(line, sizeof line, "%s:%s\n", name, hash);

    if (!file) {
        fputs(line, stdout);
        rc = 0;
        goto out;
    }
    /* Only the owner may read the file (mode 0600): even hashes can be
     * attacked offline.  O_APPEND plus one write adds the line whole. */
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, line, (size_t)len) != len) {
        perror(file);
    } else {
        rc = 0;
    }
    if (fd >= 0 && close(fd) < 0) {
        perror(file);
        rc = 2;
    }
out:
    explicit_bzero(password, sizeof password);
    explicit_bzero(again, sizeof again);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: login-server [--tls-cert FILE --tls-key FILE] [ADDR] USERS_FILE\n"
                    "       login-server --add USER [USERS_FILE]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && argc <= 4 && strcmp(argv[1], "--add") == 0)
        return add_user(argv[2], argc == 4 ? argv[3] : NULL);
    const char *args[2], *cert = NULL, *key = NULL;
    int nargs = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            cert = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (argv[i][0] != '-' && nargs < 2)
            args[nargs++] = argv[i];
        else
            return usage();
    }
    if (nargs == 0 || (cert == NULL) != (key == NULL))
        return usage(); /* a users file; both TLS files or neither */
    const char *addr = nargs == 2 ? args[0] : ":29876";
    users_file = args[nargs - 1];
    if (cert && !sm_tls_available()) {
        fprintf(stderr, "login-server: --tls-cert: this libsockmsg was built without TLS "
                        "(OpenSSL)\n");
        return 1;
    }
    FILE *check = fopen(users_file, "r"); /* fail now, not on each request */
    if (!check) {
        perror(users_file);
        return 1;
    }
    fclose(check);

    /* The hash checked for unknown users: of a random password nobody
     * knows (its salt's random bytes will do). */
    char secret[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn(HASH_PREFIX, 0, NULL, 0, secret, sizeof secret) ||
        hash_new(secret, dummy_hash) < 0) {
        perror("login-server: crypt");
        return 1;
    }

    sm_server_handlers handlers = { .on_open = on_open,
                                    .on_message = on_message,
                                    .on_close = on_close };
    /* A request is a name, '\0' and a password: refuse anything longer. */
    sm_server_options options = { .max_frame = MAX_REQUEST };
    char where[SM_ADDRSTRLEN];

    /* TLS: the server shows this certificate; the key proves it is ours. */
    sm_tls_options tls = { .cert_file = cert, .key_file = key };
    if (sm_server_new(&server, &handlers, &options, NULL) < 0 ||
        (cert ? sm_server_listen_tls(server, addr, &tls) : sm_server_listen(server, addr)) < 0) {
        fprintf(stderr, "login-server: %s\n", sm_last_error());
        sm_server_free(server);
        return 1;
    }
    if (!cert && strncmp(addr, "unix:", 5) != 0)
        fprintf(stderr, "login-server: warning: no TLS (--tls-cert, --tls-key): passwords "
                        "cross the network readable\n");

    pthread_t workers[WORKERS];
    int started = 0;
    while (started < WORKERS &&
           pthread_create(&workers[started], NULL, worker_main, &crypt_work[started]) == 0)
        started++;
    if (started == 0) {
        fprintf(stderr, "login-server: cannot start a worker thread\n");
        sm_server_free(server);
        return 1;
    }

    /* Catch signals before saying we are ready. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sm_server_addr(server, 0, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout);

    int rc = sm_server_run(server); /* returns after sm_server_stop */
    if (rc < 0)
        fprintf(stderr, "login-server: %s\n", sm_last_error());

    /* Every client is closed now.  The workers empty the queue (skipping
     * the hashes: nobody waits for them) and end. */
    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_broadcast(&work_to_do);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < started; i++)
        pthread_join(workers[i], NULL);
    sm_server_free(server);
    return rc < 0 ? 1 : 0;
}
