/*
 * smcat - netcat for framed messages.
 *
 *     smcat --listen 127.0.0.1:0 --echo              an echo server
 *     smcat --connect 127.0.0.1:7000 --data hi --expect 1
 *     smcat --listen :7000 --format framed > capture   (replay it with
 *     smcat --connect HOST:7000 --in framed < capture)
 *
 * One connection (client, or a listener serving one client) runs two
 * threads: this one receives and prints, a sender thread sends.  Sending
 * everything before reading anything would deadlock against a peer that
 * answers as it reads (an echo server stops reading from a client whose
 * replies pile up), so both directions run at once, as in nc.
 *
 * When the sender has nothing more to send, the connection stays open in
 * both directions: many servers (libsockmsg's event server among them)
 * take the end of a client's input as the end of the conversation and
 * would drop replies still being prepared.  With --half-close the sender
 * then shuts down its side (shutdown SHUT_WR) instead, so the peer sees a
 * clean close between frames and can finish.  smcat exits once both
 * directions are done: its own input is sent and the peer has closed (or
 * --expect messages arrived, or an error or timeout ended the session).
 * docs/man/smcat.1 is the full manual.
 */
#include <sockmsg/sockmsg.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Exit codes; --help and the man page list them. */
enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,    /* anything else: file, stdin, stdout, reset, ... */
    EXIT_USAGE = 2,   /* bad command line */
    EXIT_ADDR = 3,    /* address malformed or not resolvable */
    EXIT_CONNECT = 4, /* connect or listen failed (refused, in use, ...) */
    EXIT_PROTO = 5,   /* frame too large, truncated frame, bad framed input */
    EXIT_TIMEOUT = 6  /* --timeout or --recv-timeout expired */
};

/* Transfers larger than this get a progress line on a terminal. */
#define PROGRESS_MIN (4u * 1024u * 1024u)
#define PROGRESS_MS 250
/* --retry: first pause between connect attempts, and the longest. */
#define RETRY_FIRST_MS 10
#define RETRY_MAX_MS 500
/* Read stdin this much at a time. */
#define READ_CHUNK (64u * 1024u)

enum in_format { IN_LINES, IN_WHOLE, IN_FRAMED };
enum out_format { OUT_TEXT, OUT_RAW, OUT_FRAMED, OUT_HEX };

/* One message to send: from --data (points into argv), --file or a
 * buffered stdin (owned). */
struct msg {
    const uint8_t *data; /* with is_file: the path, until loaded */
    size_t len;
    uint8_t *owned;
    bool is_file;
};

struct config {
    const char *listen, *connect;
    bool retry, echo, no_wait, half_close, verbose, quiet;
    int timeout_ms, recv_timeout_ms, interval_ms; /* 0: none */
    unsigned long count;
    long expect; /* -1: until the peer closes */
    uint32_t max_frame;
    enum in_format in;
    enum out_format out;
    bool use_stdin;      /* no --data or --file given */
    bool stdin_streamed; /* stdin sent as it is read (count 1) */
    struct msg *msgs;    /* --data/--file (or stdin with --count) */
    size_t nmsgs;
};

/* Set by one thread, read by another (progress line). */
static atomic_uint_least64_t bytes_in, bytes_out;

static int complain(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smcat: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The exit code for a library error met while a connection is open. */
static int exit_for(int rc)
{
    switch (rc) {
    case SM_ETOOBIG:
    case SM_ETRUNCATED: return EXIT_PROTO;
    case SM_ETIMEDOUT: return EXIT_TIMEOUT;
    case SM_EADDR: return EXIT_ADDR;
    default: return EXIT_FAIL;
    }
}

/* The exit code for a failed connect, listen or accept. */
static int exit_for_setup(int rc)
{
    if (rc == SM_EADDR)
        return EXIT_ADDR;
    if (rc == SM_ETIMEDOUT)
        return EXIT_TIMEOUT;
    return EXIT_CONNECT;
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: smcat --connect ADDR [options]      send messages, print replies\n"
               "       smcat --listen ADDR [options]       serve one client the same way\n"
               "       smcat --listen ADDR --echo [-v]     echo server for many clients\n"
               "\n"
               "ADDR: host:port, [v6addr]:port, :port, unix:/path (port 0: any free port;\n"
               "--listen always prints \"smcat: listening on ADDR\" to stderr unless -q)\n"
               "\n"
               "Connection:\n"
               "  -c, --connect ADDR      connect to ADDR\n"
               "  -l, --listen ADDR       listen on ADDR, serve one client, then exit\n"
               "  -e, --echo              with --listen: echo every message back to its\n"
               "                          sender, any number of clients, until SIGINT/SIGTERM\n"
               "  -r, --retry             keep trying to connect (backoff) until it works\n"
               "  -t, --timeout MS        give up connecting (retrying) or waiting for a\n"
               "                          client after MS milliseconds\n"
               "Sending (default: stdin, one message per line):\n"
               "  -d, --data TEXT         send TEXT as one message (repeatable)\n"
               "  -f, --file PATH         send the file's contents as one message (repeatable)\n"
               "  -i, --in FORMAT         how stdin is split: lines (newline removed),\n"
               "                          whole (all of it is one message), framed (frames\n"
               "                          as --format framed writes them)\n"
               "      --stdin-whole       same as --in whole\n"
               "      --stdin-framed      same as --in framed\n"
               "  -n, --count N           send the messages N times (default 1)\n"
               "      --interval MS       pause MS milliseconds between messages\n"
               "Receiving (default: print until the peer closes):\n"
               "  -o, --format FORMAT     text (default: one line per message, bytes other\n"
               "                          than printable ASCII as \\xNN, backslash as \\\\),\n"
               "                          raw (payloads back to back), framed (length +\n"
               "                          payload, as on the wire), hex (a dump per message)\n"
               "      --expect N          stop once N messages have arrived\n"
               "  -N, --no-wait           send, then close without reading replies\n"
               "      --half-close        once everything is sent, shut down the sending\n"
               "                          side, so the peer sees the end of the input\n"
               "                          (default: keep it open while waiting)\n"
               "  -w, --recv-timeout MS   fail if no message arrives for MS milliseconds\n"
               "                          (with --echo: disconnect clients idle that long)\n"
               "  -m, --max-frame N       largest message accepted (also from --in framed);\n"
               "                          suffix K or M for KiB or MiB (default 16M)\n"
               "Messages:\n"
               "  -v, --verbose           report connects and disconnects on stderr\n"
               "  -q, --quiet             no listening line, no progress line\n"
               "  -h, --help              show this help\n"
               "  -V, --version           show the version\n"
               "\n"
               "Exit codes: 0 success, 1 other error (file, stdin, stdout, connection reset,\n"
               "peer closed before --expect N), 2 usage, 3 bad address, 4 connect or listen\n"
               "failed, 5 protocol error (frame too large or truncated), 6 timeout.\n");
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smcat: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (try 'smcat --help')\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* Parses a whole decimal number in [min, max]; with `sizes`, a K or M
 * suffix multiplies by 1024 or 1024*1024. */
static int parse_number(const char *opt, const char *arg, unsigned long long min,
                        unsigned long long max, bool sizes, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    bool ok = arg[0] >= '0' && arg[0] <= '9' && errno == 0 && end != arg;
    unsigned long long unit = 1;
    if (ok && sizes && (*end == 'k' || *end == 'K'))
        unit = 1024, end++;
    else if (ok && sizes && (*end == 'm' || *end == 'M'))
        unit = 1024 * 1024, end++;
    if (!ok || *end || v > max / unit || v * unit < min || v * unit > max)
        return usage_error("%s: '%s' is not a number from %llu to %llu", opt, arg, min, max);
    *out = v * unit;
    return 0;
}

static int parse_ms(const char *opt, const char *arg, int *out)
{
    unsigned long long v = 0;
    int rc = parse_number(opt, arg, 0, INT_MAX, false, &v);
    *out = (int)v;
    return rc;
}

static int parse_in(const char *arg, enum in_format *out)
{
    static const char *const names[] = { "lines", "whole", "framed" };
    for (int i = 0; i < 3; i++)
        if (strcmp(arg, names[i]) == 0) {
            *out = (enum in_format)i;
            return 0;
        }
    return usage_error("--in: unknown input format '%s' (lines, whole, framed)", arg);
}

static int parse_out(const char *arg, enum out_format *out)
{
    static const char *const names[] = { "text", "raw", "framed", "hex" };
    for (int i = 0; i < 4; i++)
        if (strcmp(arg, names[i]) == 0) {
            *out = (enum out_format)i;
            return 0;
        }
    return usage_error("--format: unknown output format '%s' (text, raw, framed, hex)", arg);
}

/* Long-only options. */
enum { OPT_STDIN_WHOLE = 256, OPT_STDIN_FRAMED, OPT_INTERVAL, OPT_EXPECT, OPT_HALF_CLOSE };

static const struct option long_options[] = { { "connect", required_argument, NULL, 'c' },
                                              { "listen", required_argument, NULL, 'l' },
                                              { "echo", no_argument, NULL, 'e' },
                                              { "retry", no_argument, NULL, 'r' },
                                              { "timeout", required_argument, NULL, 't' },
                                              { "data", required_argument, NULL, 'd' },
                                              { "file", required_argument, NULL, 'f' },
                                              { "in", required_argument, NULL, 'i' },
                                              { "stdin-whole", no_argument, NULL, OPT_STDIN_WHOLE },
                                              { "stdin-framed", no_argument, NULL,
                                                OPT_STDIN_FRAMED },
                                              { "count", required_argument, NULL, 'n' },
                                              { "interval", required_argument, NULL, OPT_INTERVAL },
                                              { "format", required_argument, NULL, 'o' },
                                              { "expect", required_argument, NULL, OPT_EXPECT },
                                              { "no-wait", no_argument, NULL, 'N' },
                                              { "half-close", no_argument, NULL, OPT_HALF_CLOSE },
                                              { "recv-timeout", required_argument, NULL, 'w' },
                                              { "max-frame", required_argument, NULL, 'm' },
                                              { "verbose", no_argument, NULL, 'v' },
                                              { "quiet", no_argument, NULL, 'q' },
                                              { "help", no_argument, NULL, 'h' },
                                              { "version", no_argument, NULL, 'V' },
                                              { NULL, 0, NULL, 0 } };
static const char short_options[] = ":c:l:ert:d:f:i:n:o:Nw:m:vqhV";

/* The option getopt just rejected, for the error line: a long one as
 * written, a short one by its letter (argv may hold a cluster like -vx). */
static const char *bad_option(char **argv, char *buf, size_t len)
{
    const char *arg = argv[optind - 1];
    if (strncmp(arg, "--", 2) == 0 || optopt == 0)
        return arg;
    snprintf(buf, len, "-%c", optopt);
    return buf;
}

/* Options that only make sense for one connection, not with --echo. */
#define ONE_CONN_OPTS                                                                              \
    "--data, --file, --in, --count, --interval, --expect, "                                        \
    "--no-wait, --half-close, --timeout, --format"

struct parse_state {
    bool one_conn_opt; /* any of ONE_CONN_OPTS given */
    bool in_given;
};

static void msg_add(struct config *cfg, const uint8_t *data, size_t len, uint8_t *owned,
                    bool is_file)
{
    cfg->msgs[cfg->nmsgs++] =
        (struct msg){ .data = data, .len = len, .owned = owned, .is_file = is_file };
}

/* Handles one option; returns 0, or an exit code (-1: exit 0 now). */
static int apply_option(int opt, char **argv, struct config *cfg, struct parse_state *ps)
{
    unsigned long long v = 0;
    char name[8];
    switch (opt) {
    case 'c': cfg->connect = optarg; return 0;
    case 'l': cfg->listen = optarg; return 0;
    case 'e': cfg->echo = true; return 0;
    case 'r': cfg->retry = true; return 0;
    case 't': ps->one_conn_opt = true; return parse_ms("--timeout", optarg, &cfg->timeout_ms);
    case 'd':
        ps->one_conn_opt = true;
        msg_add(cfg, (const uint8_t *)optarg, strlen(optarg), NULL, false);
        return 0;
    case 'f':
        ps->one_conn_opt = true;
        /* Loaded after parsing, so usage errors come before file errors. */
        msg_add(cfg, (const uint8_t *)optarg, 0, NULL, true);
        return 0;
    case 'i': ps->one_conn_opt = ps->in_given = true; return parse_in(optarg, &cfg->in);
    case OPT_STDIN_WHOLE:
        ps->one_conn_opt = ps->in_given = true;
        cfg->in = IN_WHOLE;
        return 0;
    case OPT_STDIN_FRAMED:
        ps->one_conn_opt = ps->in_given = true;
        cfg->in = IN_FRAMED;
        return 0;
    case 'n':
        ps->one_conn_opt = true;
        if (parse_number("--count", optarg, 1, ULONG_MAX, false, &v))
            return EXIT_USAGE;
        cfg->count = (unsigned long)v;
        return 0;
    case OPT_INTERVAL:
        ps->one_conn_opt = true;
        return parse_ms("--interval", optarg, &cfg->interval_ms);
    case 'o': ps->one_conn_opt = true; return parse_out(optarg, &cfg->out);
    case OPT_EXPECT:
        ps->one_conn_opt = true;
        if (parse_number("--expect", optarg, 0, LONG_MAX, false, &v))
            return EXIT_USAGE;
        cfg->expect = (long)v;
        return 0;
    case 'N':
        ps->one_conn_opt = true;
        cfg->no_wait = true;
        return 0;
    case OPT_HALF_CLOSE:
        ps->one_conn_opt = true;
        cfg->half_close = true;
        return 0;
    case 'w': return parse_ms("--recv-timeout", optarg, &cfg->recv_timeout_ms);
    case 'm':
        if (parse_number("--max-frame", optarg, 1, UINT32_MAX, true, &v))
            return EXIT_USAGE;
        cfg->max_frame = (uint32_t)v;
        return 0;
    case 'v': cfg->verbose = true; return 0;
    case 'q': cfg->quiet = true; return 0;
    case 'h': usage(stdout); return -1;
    case 'V': printf("smcat (libsockmsg) %s\n", sm_version()); return -1;
    case ':': return usage_error("option '%s' needs a value", bad_option(argv, name, sizeof name));
    default: return usage_error("unknown option '%s'", bad_option(argv, name, sizeof name));
    }
}

/* Checks that the options given fit together. */
static int check_config(struct config *cfg, const struct parse_state *ps)
{
    if (!cfg->listen == !cfg->connect)
        return usage_error("give exactly one of --listen ADDR and --connect ADDR");
    if (cfg->echo && !cfg->listen)
        return usage_error("--echo needs --listen");
    if (cfg->echo && ps->one_conn_opt)
        return usage_error("--echo sends only echoes: " ONE_CONN_OPTS " do not apply");
    if (cfg->retry && !cfg->connect)
        return usage_error("--retry needs --connect");
    if (cfg->no_wait && cfg->expect >= 0)
        return usage_error("--no-wait and --expect exclude each other");
    cfg->use_stdin = cfg->nmsgs == 0;
    if (!cfg->use_stdin && ps->in_given)
        return usage_error("--in reads stdin, which --data and --file replace");
    if (cfg->expect == 0)
        cfg->no_wait = true; /* expecting nothing is not waiting */
    cfg->stdin_streamed = cfg->use_stdin && cfg->count == 1;
    return 0;
}

/* Fills cfg from argv; returns 0, an exit code, or -1 (exit 0 now). */
static int parse_args(int argc, char **argv, struct config *cfg)
{
    struct parse_state ps = { false, false };
    *cfg = (struct config){ .count = 1, .expect = -1, .max_frame = SM_DEFAULT_MAX_FRAME };
    /* At most one message per argument: enough room for every --data/--file. */
    cfg->msgs = calloc((size_t)argc, sizeof *cfg->msgs);
    if (!cfg->msgs)
        return complain(EXIT_FAIL, "out of memory");
    opterr = 0; /* our own one-line messages instead of getopt's */
    int opt;
    while ((opt = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        int rc = apply_option(opt, argv, cfg, &ps);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    return check_config(cfg, &ps);
}

/* ------------------------------------------------------------------ */
/* Input: files and stdin                                              */
/* ------------------------------------------------------------------ */

/* A growable byte buffer. */
struct buf {
    uint8_t *p;
    size_t len, cap;
};

static int buf_append(struct buf *b, const void *data, size_t len)
{
    if (len > UINT32_MAX - b->len)
        return SM_ETOOBIG; /* no frame can carry it */
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return SM_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (len)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

/* Reads a descriptor, optionally giving up when stop_fd becomes readable
 * (so the sender thread never sits in read() after the session ended). */
struct reader {
    int fd, stop_fd;
    size_t pos, end;
    bool eof;
    uint8_t chunk[READ_CHUNK];
};

enum { READ_STOPPED = -2, READ_ERROR = -1 };

/* Refills the chunk: returns bytes now buffered, 0 at end of input,
 * READ_ERROR (errno set) or READ_STOPPED. */
static ssize_t reader_fill(struct reader *r)
{
    if (r->pos < r->end)
        return (ssize_t)(r->end - r->pos);
    if (r->eof)
        return 0;
    if (r->stop_fd >= 0) {
        struct pollfd p[2] = { { r->fd, POLLIN, 0 }, { r->stop_fd, POLLIN, 0 } };
        while (poll(p, 2, -1) < 0)
            if (errno != EINTR)
                return READ_ERROR;
        if (p[1].revents)
            return READ_STOPPED;
    }
    ssize_t n;
    while ((n = read(r->fd, r->chunk, sizeof r->chunk)) < 0)
        if (errno != EINTR)
            return READ_ERROR;
    r->pos = 0;
    r->end = (size_t)n;
    r->eof = n == 0;
    return n;
}

/* Appends up to `want` bytes to b; returns the count (short only at end of
 * input) or a READ_* code. */
static ssize_t reader_take(struct reader *r, struct buf *b, size_t want, int *err)
{
    size_t got = 0;
    while (got < want) {
        ssize_t n = reader_fill(r);
        if (n <= 0)
            return n < 0 ? n : (ssize_t)got;
        size_t take = (size_t)n < want - got ? (size_t)n : want - got;
        if ((*err = buf_append(b, r->chunk + r->pos, take)) < 0)
            return READ_ERROR;
        r->pos += take;
        got += take;
    }
    return (ssize_t)got;
}

/* Outcome of reading one message from stdin. */
enum { NEXT_MSG = 1, NEXT_END = 0 };

struct input_error {
    int code; /* exit code */
    char text[200];
};

static int input_fail(struct input_error *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    return -1;
}

/* READ_ERROR/READ_STOPPED from the reader, as a next_* result. */
static int read_failed(ssize_t n, int err, struct input_error *e)
{
    if (n == READ_STOPPED)
        return READ_STOPPED;
    if (err == SM_ETOOBIG)
        return input_fail(e, EXIT_FAIL, "message longer than 4 GiB - 1");
    if (err == SM_ENOMEM)
        return input_fail(e, EXIT_FAIL, "out of memory");
    return input_fail(e, EXIT_FAIL, "%s", strerror(errno));
}

/* One line, without its newline; a last line without one counts too. */
static int next_line(struct reader *r, struct buf *b, struct input_error *e)
{
    bool any = false;
    int err = 0;
    for (;;) {
        ssize_t n = reader_fill(r);
        if (n < 0)
            return read_failed(n, 0, e);
        if (n == 0)
            return any ? NEXT_MSG : NEXT_END;
        any = true;
        uint8_t *start = r->chunk + r->pos;
        uint8_t *nl = memchr(start, '\n', (size_t)n);
        size_t take = nl ? (size_t)(nl - start) : (size_t)n;
        if ((err = buf_append(b, start, take)) < 0)
            return read_failed(READ_ERROR, err, e);
        r->pos += take + (nl ? 1 : 0);
        if (nl)
            return NEXT_MSG;
    }
}

/* All of the input; empty input is one empty message. */
static int next_whole(struct reader *r, struct buf *b, bool *done, struct input_error *e)
{
    int err = 0;
    if (*done)
        return NEXT_END;
    ssize_t n = reader_take(r, b, (size_t)UINT32_MAX + 1, &err);
    if (n < 0)
        return read_failed(n, err, e);
    if (n > (ssize_t)UINT32_MAX)
        return input_fail(e, EXIT_FAIL, "message longer than 4 GiB - 1");
    *done = true;
    return NEXT_MSG;
}

/* One frame as --format framed writes it: 4-byte big-endian length, payload. */
static int next_frame(struct reader *r, struct buf *b, uint32_t max, struct input_error *e)
{
    struct buf hdr = { 0 };
    uint8_t h[4] = { 0 };
    int err = 0;
    ssize_t n = reader_take(r, &hdr, 4, &err);
    if (n == 4)
        memcpy(h, hdr.p, 4);
    free(hdr.p);
    if (n < 0)
        return read_failed(n, err, e);
    if (n == 0)
        return NEXT_END;
    if (n < 4)
        return input_fail(e, EXIT_PROTO, "framed input ends inside a length header");
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len > max)
        return input_fail(e, EXIT_PROTO,
                          "framed input has a %lu-byte frame, "
                          "larger than --max-frame %lu",
                          (unsigned long)len, (unsigned long)max);
    n = reader_take(r, b, len, &err);
    if (n < 0)
        return read_failed(n, err, e);
    if ((size_t)n < len)
        return input_fail(e, EXIT_PROTO, "framed input ends inside a %lu-byte frame",
                          (unsigned long)len);
    return NEXT_MSG;
}

/* The next stdin message into b (emptied first): NEXT_MSG, NEXT_END,
 * READ_STOPPED, or -1 with *e filled. */
static int next_message(const struct config *cfg, struct reader *r, struct buf *b, bool *whole_done,
                        struct input_error *e)
{
    b->len = 0;
    switch (cfg->in) {
    case IN_WHOLE: return next_whole(r, b, whole_done, e);
    case IN_FRAMED: return next_frame(r, b, cfg->max_frame, e);
    default: return next_line(r, b, e);
    }
}

static int load_file(struct msg *m)
{
    const char *path = (const char *)m->data;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return complain(EXIT_FAIL, "--file %s: %s", path, strerror(errno));
    struct reader *r = malloc(sizeof *r);
    struct buf b = { 0 };
    bool done = false;
    struct input_error e = { 0, "" };
    int rc = r ? 0 : -1;
    if (r) {
        *r = (struct reader){ .fd = fd, .stop_fd = -1 };
        rc = next_whole(r, &b, &done, &e);
    }
    close(fd);
    free(r);
    if (rc < 0) {
        free(b.p);
        return complain(EXIT_FAIL, "--file %s: %s", path, r ? e.text : "out of memory");
    }
    *m = (struct msg){ .data = b.p, .len = b.len, .owned = b.p };
    return 0;
}

/* With --count above 1, stdin is read once, up front, and resent. */
static int load_stdin(struct config *cfg)
{
    struct reader *r = malloc(sizeof *r);
    if (!r)
        return complain(EXIT_FAIL, "out of memory");
    *r = (struct reader){ .fd = STDIN_FILENO, .stop_fd = -1 };
    struct input_error e = { 0, "" };
    struct buf b = { 0 };
    bool done = false;
    size_t cap = 0;
    int rc;
    while ((rc = next_message(cfg, r, &b, &done, &e)) == NEXT_MSG) {
        if (cfg->nmsgs == cap) {
            cap = cap ? cap * 2 : 16;
            struct msg *m = realloc(cfg->msgs, cap * sizeof *m);
            if (!m) {
                rc = input_fail(&e, EXIT_FAIL, "out of memory");
                break;
            }
            cfg->msgs = m;
        }
        /* Hand the buffer over to the message; the next one starts anew. */
        uint8_t *p = b.len ? b.p : NULL;
        msg_add(cfg, p, b.len, p, false);
        if (!p)
            free(b.p);
        b = (struct buf){ 0 };
    }
    free(b.p);
    free(r);
    return rc < 0 ? complain(e.code, "stdin: %s", e.text) : 0;
}

static int load_messages(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nmsgs; i++)
        if (cfg->msgs[i].is_file) {
            int rc = load_file(&cfg->msgs[i]);
            if (rc)
                return rc;
        }
    if (cfg->use_stdin && !cfg->stdin_streamed && !cfg->echo)
        return load_stdin(cfg);
    return 0;
}

static void free_messages(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nmsgs; i++)
        free(cfg->msgs[i].owned);
    free(cfg->msgs);
}

/* ------------------------------------------------------------------ */
/* Output formats                                                      */
/* ------------------------------------------------------------------ */

/* Printable ASCII stays, backslash doubles, everything else is \xNN, so
 * no message can move the cursor or change the terminal's state. */
static void write_text(FILE *f, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\\')
            fputs("\\\\", f);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            putc(p[i], f);
        else
            fprintf(f, "\\x%02x", p[i]);
    }
    putc('\n', f);
}

/* hexdump -C's layout, after a line giving the message's number and length. */
static void write_hex(FILE *f, const uint8_t *p, size_t len, uint64_t number)
{
    fprintf(f, "message %llu: %zu bytes\n", (unsigned long long)number, len);
    for (size_t off = 0; off < len; off += 16) {
        fprintf(f, "%08zx  ", off);
        for (size_t i = 0; i < 16; i++) {
            if (off + i < len)
                fprintf(f, "%02x ", p[off + i]);
            else
                fputs("   ", f);
            if (i == 7)
                putc(' ', f);
        }
        fputs(" |", f);
        for (size_t i = 0; i < 16 && off + i < len; i++)
            putc(p[off + i] >= 0x20 && p[off + i] < 0x7f ? p[off + i] : '.', f);
        fputs("|\n", f);
    }
}

static void write_framed(FILE *f, const uint8_t *p, size_t len)
{
    uint8_t h[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                     (uint8_t)len };
    fwrite(h, 1, 4, f);
    fwrite(p, 1, len, f);
}

static void write_message(enum out_format fmt, const void *msg, size_t len, uint64_t number)
{
    switch (fmt) {
    case OUT_RAW: fwrite(msg, 1, len, stdout); break;
    case OUT_FRAMED: write_framed(stdout, msg, len); break;
    case OUT_HEX: write_hex(stdout, msg, len, number); break;
    default: write_text(stdout, msg, len); break;
    }
}

/* ------------------------------------------------------------------ */
/* Progress line                                                       */
/* ------------------------------------------------------------------ */

static void format_size(char *buf, size_t len, double bytes)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (bytes >= 1024 && u < 4)
        bytes /= 1024, u++;
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

struct progress {
    pthread_t thread;
    bool running, shown;
    int stop_fd;
    int64_t start;
};

static void progress_print(struct progress *p, bool last)
{
    uint64_t in = atomic_load(&bytes_in), out = atomic_load(&bytes_out);
    if (!p->shown && in + out < PROGRESS_MIN)
        return;
    double secs = (double)(now_ms() - p->start) / 1000;
    char s_out[32], s_in[32], s_rate[32];
    format_size(s_out, sizeof s_out, (double)out);
    format_size(s_in, sizeof s_in, (double)in);
    format_size(s_rate, sizeof s_rate, secs > 0 ? (double)(in + out) / secs : 0);
    /* \r and the clearing sequence rewrite the same terminal line. */
    fprintf(stderr, "\rsmcat: sent %s, received %s, %s/s\033[K%s", s_out, s_in, s_rate,
            last ? "\n" : "");
    p->shown = true;
}

static void *progress_main(void *arg)
{
    struct progress *p = arg;
    struct pollfd pfd = { p->stop_fd, POLLIN, 0 };
    while (poll(&pfd, 1, PROGRESS_MS) <= 0 || !pfd.revents)
        progress_print(p, false);
    if (p->shown)
        progress_print(p, true);
    return NULL;
}

/* Only people watching a terminal want it; logs and pipes stay clean. */
static void progress_start(struct progress *p, const struct config *cfg, int stop_fd)
{
    *p = (struct progress){ .stop_fd = stop_fd, .start = now_ms() };
    if (cfg->quiet || !isatty(STDERR_FILENO))
        return;
    p->running = pthread_create(&p->thread, NULL, progress_main, p) == 0;
}

/* The stop pipe must already be readable. */
static void progress_finish(struct progress *p)
{
    if (p->running)
        pthread_join(p->thread, NULL);
}

/* ------------------------------------------------------------------ */
/* One connection: send and receive at once                            */
/* ------------------------------------------------------------------ */

struct session {
    const struct config *cfg;
    sm_conn *conn;
    char peer[SM_ADDRSTRLEN];
    int stop[2];             /* readable once the session is ending */
    atomic_bool stopping;    /* main thread ended the session */
    atomic_bool send_failed; /* sender ended it: its error wins */
    int send_code;
    char send_error[300];
    uint64_t sent, received;
    int stdout_errno; /* writing what arrived failed */
};

static void request_stop(struct session *s)
{
    if (write(s->stop[1], "x", 1) < 0) {
        /* The pipe is only ever written once or twice: it cannot be full. */
    }
}

/* Waits between messages; false if the session ended meanwhile. */
static bool pause_ms(struct session *s, int ms)
{
    struct pollfd pfd = { s->stop[0], POLLIN, 0 };
    int64_t end = now_ms() + ms;
    for (int64_t left = ms; left > 0; left = end - now_ms()) {
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return false;
        if (n < 0 && errno != EINTR)
            break;
    }
    return true;
}

/* Returns 0, or an exit code with s->send_error filled (-1: stopped). */
static int send_one(struct session *s, const void *msg, size_t len)
{
    const struct config *cfg = s->cfg;
    if (s->sent > 0 && cfg->interval_ms > 0 && !pause_ms(s, cfg->interval_ms))
        return -1;
    int rc = sm_send(s->conn, msg, len);
    if (rc < 0) {
        if (atomic_load(&s->stopping))
            return -1;
        snprintf(s->send_error, sizeof s->send_error, "%s", sm_last_error());
        return exit_for(rc);
    }
    s->sent++;
    atomic_fetch_add(&bytes_out, len);
    return 0;
}

/* Sends stdin as it is read, so interactive lines go out as typed. */
static int send_stream(struct session *s)
{
    struct reader *r = malloc(sizeof *r);
    if (!r) {
        snprintf(s->send_error, sizeof s->send_error, "out of memory");
        return EXIT_FAIL;
    }
    *r = (struct reader){ .fd = STDIN_FILENO, .stop_fd = s->stop[0] };
    struct buf b = { 0 };
    struct input_error e = { 0, "" };
    bool done = false;
    int rc, code = 0;
    while ((rc = next_message(s->cfg, r, &b, &done, &e)) == NEXT_MSG)
        if ((code = send_one(s, b.p, b.len)) != 0)
            break;
    if (rc == READ_STOPPED)
        code = -1;
    else if (rc < 0) {
        snprintf(s->send_error, sizeof s->send_error, "stdin: %s", e.text);
        code = e.code;
    }
    free(b.p);
    free(r);
    return code;
}

/* Returns 0, -1 (stopped) or an exit code with s->send_error filled. */
static int send_all(struct session *s)
{
    const struct config *cfg = s->cfg;
    if (cfg->stdin_streamed)
        return send_stream(s);
    for (unsigned long round = 0; round < cfg->count; round++)
        for (size_t i = 0; i < cfg->nmsgs; i++) {
            int code = send_one(s, cfg->msgs[i].data, cfg->msgs[i].len);
            if (code)
                return code;
        }
    return 0;
}

static void *sender_main(void *arg)
{
    struct session *s = arg;
    int fd = sm_conn_fd(s->conn);
    int code = send_all(s);
    if (code == 0 && s->cfg->half_close) {
        /* Half-close: the peer sees a clean end between frames and can
         * finish, while replies still flow our way.  No frame is held
         * back (we never use SM_MORE), so nothing is lost.  Only on
         * request: a server that ends the conversation at the end of our
         * input would drop replies it has not sent yet. */
        shutdown(fd, SHUT_WR);
    } else if (code > 0) {
        s->send_code = code;
        atomic_store(&s->send_failed, true);
        /* Wake the receiving thread: the session is over. */
        shutdown(fd, SHUT_RDWR);
    }
    return NULL;
}

/* receive_loop's result when stdout, not the connection, failed. */
#define RECV_STDOUT_FAILED 1

/* Prints messages until the peer closes, --expect is met or an error.
 * Returns 0 (done), the receive error, or RECV_STDOUT_FAILED. */
static int receive_loop(struct session *s)
{
    const struct config *cfg = s->cfg;
    for (;;) {
        if (cfg->expect >= 0 && s->received >= (uint64_t)cfg->expect)
            return 0;
        const void *msg;
        ssize_t n = sm_recv_view(s->conn, &msg);
        if (n < 0)
            return (int)n;
        s->received++;
        atomic_fetch_add(&bytes_in, (uint64_t)n);
        errno = 0; /* so a stdio failure below reports its own cause */
        write_message(cfg->out, msg, (size_t)n, s->received);
        /* Flush only when no further message is already buffered: one
         * write per burst, yet every message shows up as it arrives. */
        if ((!sm_recv_ready(s->conn) && fflush(stdout) != 0) || ferror(stdout)) {
            s->stdout_errno = errno ? errno : EIO;
            return RECV_STDOUT_FAILED;
        }
    }
}

/* Turns how receiving ended into an exit code, with a message. */
static int receive_result(struct session *s, int rc)
{
    const struct config *cfg = s->cfg;
    if (rc == 0)
        return EXIT_OK;
    if (rc == RECV_STDOUT_FAILED)
        return complain(EXIT_FAIL, "stdout: %s", strerror(s->stdout_errno));
    if (rc == SM_ECLOSED) {
        if (cfg->expect > 0 && s->received < (uint64_t)cfg->expect)
            return complain(EXIT_FAIL,
                            "%s closed the connection after %llu of %ld "
                            "expected messages",
                            s->peer, (unsigned long long)s->received, cfg->expect);
        return EXIT_OK;
    }
    if (rc == SM_ETIMEDOUT)
        return complain(EXIT_TIMEOUT, "no message from %s for %d ms (--recv-timeout)", s->peer,
                        cfg->recv_timeout_ms);
    return complain(exit_for(rc), "%s", sm_last_error());
}

/* Ends the session from this side: the sender stops wherever it is. */
static void stop_sender(struct session *s)
{
    atomic_store(&s->stopping, true);
    request_stop(s);
    shutdown(sm_conn_fd(s->conn), SHUT_RDWR);
}

static int run_two_way(struct session *s)
{
    pthread_t sender;
    if (pthread_create(&sender, NULL, sender_main, s) != 0)
        return complain(EXIT_FAIL, "cannot start the sending thread");
    int rc = receive_loop(s);
    /* The peer closing ends only its direction: ours runs to the end. */
    if (rc != SM_ECLOSED || atomic_load(&s->send_failed))
        stop_sender(s);
    pthread_join(sender, NULL);
    if (atomic_load(&s->send_failed))
        return complain(s->send_code, "%s", s->send_error);
    return receive_result(s, rc);
}

static int run_send_only(struct session *s)
{
    int code = send_all(s);
    if (code > 0)
        return complain(code, "%s", s->send_error);
    return EXIT_OK;
}

/* Runs one connection to its end and closes it; returns the exit code. */
static int run_session(const struct config *cfg, sm_conn *conn)
{
    struct session s = { .cfg = cfg, .conn = conn };
    atomic_init(&s.stopping, false);
    atomic_init(&s.send_failed, false);
    if (sm_conn_peer(conn, s.peer, sizeof s.peer) < 0)
        snprintf(s.peer, sizeof s.peer, "peer");
    if (pipe(s.stop) < 0) {
        sm_close(conn);
        return complain(EXIT_FAIL, "pipe: %s", strerror(errno));
    }
    struct progress prog;
    progress_start(&prog, cfg, s.stop[0]);
    int code = cfg->no_wait ? run_send_only(&s) : run_two_way(&s);
    request_stop(&s);
    progress_finish(&prog);
    if (cfg->verbose)
        complain(0, "disconnected from %s (sent %llu, received %llu messages)", s.peer,
                 (unsigned long long)s.sent, (unsigned long long)s.received);
    sm_close(conn);
    close(s.stop[0]);
    close(s.stop[1]);
    return code;
}

/* ------------------------------------------------------------------ */
/* Modes                                                               */
/* ------------------------------------------------------------------ */

static bool retryable(int rc)
{
    return rc == -ECONNREFUSED || rc == -ENOENT || rc == -ECONNRESET || rc == -ECONNABORTED ||
           rc == -EHOSTUNREACH || rc == -ENETUNREACH || rc == -EAGAIN || rc == -ETIMEDOUT ||
           rc == SM_ETIMEDOUT;
}

/* Connects, with --retry again and again (backoff doubling up to
 * RETRY_MAX_MS) until it works or --timeout has passed. */
static int connect_retrying(const struct config *cfg, sm_options *opt, sm_conn **conn)
{
    int64_t deadline = now_ms() + cfg->timeout_ms;
    int wait = RETRY_FIRST_MS;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (cfg->timeout_ms)
            opt->connect_timeout_ms = left > 1 ? (int)left : 1;
        int rc = sm_connect_opts(conn, cfg->connect, opt);
        if (rc == 0)
            return 0;
        if (!retryable(rc))
            return complain(exit_for_setup(rc), "%s", sm_last_error());
        left = deadline - now_ms();
        if (cfg->timeout_ms && left <= 0)
            return complain(EXIT_TIMEOUT, "gave up after %d ms (--timeout): %s", cfg->timeout_ms,
                            sm_last_error());
        if (cfg->verbose)
            complain(0, "%s; retrying in %d ms", sm_last_error(), wait);
        struct timespec ts = { wait / 1000, (long)(wait % 1000) * 1000000 };
        if (cfg->timeout_ms && left < wait)
            ts = (struct timespec){ left / 1000, (long)(left % 1000) * 1000000 };
        nanosleep(&ts, NULL);
        wait = wait * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : wait * 2;
    }
}

static int run_connect(const struct config *cfg)
{
    sm_options opt = { .recv_timeout_ms = cfg->recv_timeout_ms, .max_frame = cfg->max_frame };
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
    if (cfg->verbose) {
        char peer[SM_ADDRSTRLEN] = "peer";
        sm_conn_peer(conn, peer, sizeof peer);
        complain(0, "connected to %s", peer);
    }
    return run_session(cfg, conn);
}

static void say_listening(const struct config *cfg, const char *where)
{
    if (!cfg->quiet)
        complain(0, "listening on %s", where);
}

static int run_listen_one(const struct config *cfg)
{
    sm_options opt = { .accept_timeout_ms = cfg->timeout_ms,
                       .recv_timeout_ms = cfg->recv_timeout_ms,
                       .max_frame = cfg->max_frame };
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
    if (cfg->verbose) {
        char peer[SM_ADDRSTRLEN] = "peer";
        sm_conn_peer(conn, peer, sizeof peer);
        complain(0, "connection from %s", peer);
    }
    return run_session(cfg, conn);
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

static int run_echo(const struct config *cfg)
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
    if ((rc = sm_server_listen(echo_server, cfg->listen)) < 0) {
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

int main(int argc, char **argv)
{
    /* A reader that goes away (smcat ... | head) must not kill us with
     * SIGPIPE: writing stdout then fails with EPIPE, which is reported
     * ("smcat: stdout: Broken pipe") and exits 1, as the manual says. */
    struct sigaction ignore = { .sa_handler = SIG_IGN };
    sigaction(SIGPIPE, &ignore, NULL);

    struct config cfg;
    int code = parse_args(argc, argv, &cfg);
    if (code == 0)
        code = load_messages(&cfg);
    if (code == 0) {
        if (cfg.echo)
            code = run_echo(&cfg);
        else if (cfg.listen)
            code = run_listen_one(&cfg);
        else
            code = run_connect(&cfg);
    }
    free_messages(&cfg);
    if (fflush(stdout) != 0 && code == 0)
        code = complain(EXIT_FAIL, "stdout: %s", strerror(errno));
    return code < 0 ? EXIT_OK : code;
}
