/*
 * smcat's private header: what its parts share.  One file per concern:
 *
 *   main.c      main, exit codes and error lines
 *   args.c      the command line, into struct config
 *   input.c     what to send: --data, --file, stdin (lines, whole, framed)
 *   output.c    what arrived, on stdout: text, raw, framed, hex
 *   progress.c  the progress line on a terminal
 *   session.c   one connection: send and receive at once
 *   modes.c     --connect, --listen, --listen --echo
 *
 * The program itself is described in main.c and docs/man/smcat.1.
 */
#ifndef SMCAT_H
#define SMCAT_H

#include <sockmsg/frame.h>
#include <sockmsg/sockmsg.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
    bool tls_on;        /* --tls or any --tls-* option */
    sm_tls_options tls; /* for sm_options.tls and sm_server_listen_tls */
};

/* --- main.c --- */

/* Prints "smcat: " and the message on stderr; returns code. */
int complain(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int64_t now_ms(void);
/* The exit code for a library error met while a connection is open. */
int exit_for(int rc);
/* The exit code for a failed connect, listen or accept. */
int exit_for_setup(int rc);

/* --- args.c --- */

/* Fills cfg from argv; returns 0, an exit code, or -1 (exit 0 now). */
int parse_args(int argc, char **argv, struct config *cfg);
void msg_add(struct config *cfg, const uint8_t *data, size_t len, uint8_t *owned, bool is_file);

/* --- input.c --- */

/* A growable byte buffer. */
struct buf {
    uint8_t *p;
    size_t len, cap;
};

/* Reads one descriptor, message by message. */
struct reader;

struct input_error {
    int code; /* exit code */
    char text[200];
};

/* Results of next_message besides -1 (an error). */
enum { NEXT_MSG = 1, NEXT_END = 0, READ_STOPPED = -2 };

/* A reader of fd that gives up when stop_fd (-1: none) becomes readable,
 * so that a thread never sits in read() after the session ended.  NULL
 * when out of memory; free() it. */
struct reader *reader_new(int fd, int stop_fd);
/* The next message into b (emptied first): NEXT_MSG, NEXT_END,
 * READ_STOPPED, or -1 with *e filled. */
int next_message(const struct config *cfg, struct reader *r, struct buf *b, struct input_error *e);
/* Reads every --file, and stdin when it is sent more than once. */
int load_messages(struct config *cfg);
void free_messages(struct config *cfg);

/* --- output.c --- */

void write_message(enum out_format fmt, const void *msg, size_t len, uint64_t number);

/* --- progress.c --- */

/* Bytes sent and received: counted by one thread, shown by another. */
extern atomic_uint_least64_t bytes_in, bytes_out;

struct progress {
    pthread_t thread;
    bool running, shown;
    int stop_fd;
    int64_t start;
};

/* Starts the progress line (on a terminal only); it ends once stop_fd
 * is readable and progress_finish is called. */
void progress_start(struct progress *p, const struct config *cfg, int stop_fd);
void progress_finish(struct progress *p);

/* --- session.c --- */

/* Runs one connection to its end and closes it; returns the exit code.
 * With --verbose, says "<how> <peer>" first ("connected to 127.0.0.1:7"). */
int run_session(const struct config *cfg, sm_conn *conn, const char *how);

/* --- modes.c --- */

int run_connect(const struct config *cfg);
int run_listen_one(const struct config *cfg);
int run_echo(const struct config *cfg);

#endif
