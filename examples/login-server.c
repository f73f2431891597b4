/*
 * login-server - checks user names and passwords against a users file.
 *
 * WARNING: libsockmsg has no TLS yet, so the password crosses the network
 * as plain, readable bytes: anyone who can watch the traffic can read it.
 * Use this only on a network you trust (or over "unix:/path") until TLS
 * lands.
 *
 *     ./login-server --add alice users.txt   add a user (asks for the password)
 *     ./login-server 127.0.0.1:0 users.txt   serve (default address ":29876")
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
 * and this server hashes inside its one event loop: other clients wait
 * meanwhile.  A busy server would hash on worker threads and answer with
 * sm_server_post.
 *
 * Build with -lcrypt.  Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly.
 */
#include <crypt.h>
#include <fcntl.h>
#include <signal.h>
#include <sockmsg/sockmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define MAX_NAME 64
#define MAX_PASSWORD 1024
#define HASH_PREFIX "$y$" /* yescrypt; "$6$" would pick SHA-512 */

static sm_server *server;
static const char *users_file;

/* crypt_r's working memory.  It is large (about 32 KiB), so it is not on
 * the stack; only the server's one thread uses it. */
static struct crypt_data crypt_work;

/* A hash of a random password, checked when the user is unknown, so that
 * answering "no such user" takes as long as "wrong password". */
static char dummy_hash[CRYPT_OUTPUT_SIZE];

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
 * bytes).  Returns 0, or -1. */
static int hash_new(const char *password, char *out)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    /* NULL random bytes: libcrypt takes them from the operating system. */
    if (!crypt_gensalt_rn(HASH_PREFIX, 0, NULL, 0, salt, sizeof salt))
        return -1;
    const char *hash = crypt_r(password, salt, &crypt_work);
    int ok = hash && hash[0] != '*'; /* "*..." means crypt_r failed */
    if (ok)
        snprintf(out, CRYPT_OUTPUT_SIZE, "%s", hash);
    explicit_bzero(&crypt_work, sizeof crypt_work); /* it saw the password */
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
static int password_matches(const char *password, const char *stored)
{
    if (stored[0] != '$') /* not a modern hash: never accept */
        return 0;
    const char *hash = crypt_r(password, stored, &crypt_work);
    int ok = hash && hash[0] != '*' && same_string(hash, stored);
    explicit_bzero(&crypt_work, sizeof crypt_work);
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

/* One request: "name\0password".  Answers "OK" or "DENIED". */
static void on_message(sm_server *s, sm_conn_id id, const void *msg, size_t len, void *arg)
{
    (void)arg;
    char request[MAX_NAME + 1 + MAX_PASSWORD + 1];
    char hash[CRYPT_OUTPUT_SIZE];
    int ok = 0;

    /* Copy the request and add a '\0': then the name and the password are
     * both C strings. */
    memcpy(request, msg, len); /* len fits: see max_frame in main */
    request[len] = '\0';
    const char *name = request;
    size_t name_len = strlen(name);
    const char *password = request + name_len + 1;

    /* Well formed: exactly one '\0', after a valid name. */
    if (name_len < len && memchr(password, '\0', len - name_len - 1) == NULL &&
        valid_name(name, name_len)) {
        if (find_hash(name, hash)) {
            ok = password_matches(password, hash);
        } else {
            password_matches(password, dummy_hash); /* same time, no answer */
            ok = 0;
        }
        /* Log who tried and the outcome - never the password. */
        fprintf(stderr, "login-server: %s: %s\n", name, ok ? "OK" : "DENIED");
    }
    explicit_bzero(request, sizeof request); /* forget the password */

    const char *answer = ok ? "OK" : "DENIED";
    sm_server_send(s, id, answer, strlen(answer));
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

int main(int argc, char **argv)
{
    if (argc >= 3 && argc <= 4 && strcmp(argv[1], "--add") == 0)
        return add_user(argv[2], argc == 4 ? argv[3] : NULL);
    if (argc < 2 || argc > 3 || argv[1][0] == '-') {
        fprintf(stderr, "usage: login-server [ADDR] USERS_FILE\n"
                        "       login-server --add USER [USERS_FILE]\n");
        return 2;
    }
    const char *addr = argc == 3 ? argv[1] : ":29876";
    users_file = argv[argc - 1];
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

    sm_server_handlers handlers = { .on_message = on_message };
    /* A request is a name, '\0' and a password: refuse anything longer. */
    sm_server_options options = { .max_frame = MAX_NAME + 1 + MAX_PASSWORD };
    char where[SM_ADDRSTRLEN];

    if (sm_server_new(&server, &handlers, &options, NULL) < 0 ||
        sm_server_listen(server, addr) < 0) {
        fprintf(stderr, "login-server: %s\n", sm_last_error());
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
    sm_server_free(server);
    return rc < 0 ? 1 : 0;
}
