/* smcat: what to send (see smcat.h): --data and --file messages, and
 * stdin cut into messages by lines, as a whole, or as frames. */
#include "smcat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read this much at a time. */
#define READ_CHUNK (64u * 1024u)

/* Appends len bytes to b; returns 0, SM_ETOOBIG or SM_ENOMEM. */
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

struct reader {
    int fd, stop_fd;
    size_t pos, end;
    bool eof;
    bool whole_done; /* --in whole: the one message was returned */
    uint8_t chunk[READ_CHUNK];
};

/* Besides READ_STOPPED (smcat.h). */
enum { READ_ERROR = -1 };

struct reader *reader_new(int fd, int stop_fd)
{
    struct reader *r = malloc(sizeof *r);
    if (r)
        *r = (struct reader){ .fd = fd, .stop_fd = stop_fd };
    return r;
}

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
static int next_whole(struct reader *r, struct buf *b, struct input_error *e)
{
    int err = 0;
    if (r->whole_done)
        return NEXT_END;
    ssize_t n = reader_take(r, b, (size_t)UINT32_MAX + 1, &err);
    if (n < 0)
        return read_failed(n, err, e);
    if (n > (ssize_t)UINT32_MAX)
        return input_fail(e, EXIT_FAIL, "message longer than 4 GiB - 1");
    r->whole_done = true;
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
    uint32_t len = sm_frame_header_get(h);
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

int next_message(const struct config *cfg, struct reader *r, struct buf *b, struct input_error *e)
{
    b->len = 0;
    switch (cfg->in) {
    case IN_WHOLE: return next_whole(r, b, e);
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
    struct reader *r = reader_new(fd, -1);
    struct buf b = { 0 };
    struct input_error e = { 0, "" };
    int rc = r ? next_whole(r, &b, &e) : -1;
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
    struct reader *r = reader_new(STDIN_FILENO, -1);
    if (!r)
        return complain(EXIT_FAIL, "out of memory");
    struct input_error e = { 0, "" };
    struct buf b = { 0 };
    size_t cap = 0;
    int rc;
    while ((rc = next_message(cfg, r, &b, &e)) == NEXT_MSG) {
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

int load_messages(struct config *cfg)
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

void free_messages(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nmsgs; i++)
        free(cfg->msgs[i].owned);
    free(cfg->msgs);
}
