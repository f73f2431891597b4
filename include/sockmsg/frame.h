/*
 * sockmsg/frame.h - libsockmsg's wire format as a freestanding codec.
 *
 * A frame is a 4-byte unsigned big-endian payload length N, then N bytes of
 * payload (docs/PROTOCOL.md).  This header writes frame headers and turns a
 * byte stream, split into chunks any way at all, back into whole messages.
 *
 * It does no I/O, never allocates, keeps no global state and uses nothing
 * but <stdint.h>, <stddef.h> and (when hosted) memcpy from <string.h>, so
 * the same code runs inside libsockmsg's server, on an 8-bit AVR (where
 * int has 16 bits) and on a Cortex-M: copy this one file.  It does not
 * need sockmsg.h, and compiles as C (C99 or later) and as C++ (an Arduino
 * sketch).  Every function is static inline, so there is nothing to link,
 * and a program carries only the functions it calls.
 *
 * Decoding, for a stream with messages of at most sizeof buf bytes:
 *
 *     static uint8_t buf[64];
 *     sm_frame_decoder d;
 *     sm_frame_decoder_init(&d, sizeof buf, buf, sizeof buf);
 *
 *     while (n > 0) {                      // n bytes just read into in
 *         sm_frame_result r;
 *         int st = sm_frame_decode(&d, in, n, &r);
 *         if (st < 0)
 *             return st;                   // SM_ETOOBIG: close the stream
 *         if (st == SM_FRAME_MSG)
 *             handle(r.msg, r.len);        // a whole message
 *         in += r.used;
 *         n -= r.used;
 *     }
 *
 * A complete frame that lies wholly inside one chunk is handed out in place
 * (r.msg points into the chunk: no copy).  Only a frame split across chunks
 * is collected, into the buffer the caller gave the decoder.  A caller that
 * allocates can start with no buffer and grow one as bytes arrive: see
 * SM_FRAME_ROOM.
 */
#ifndef SOCKMSG_FRAME_H
#define SOCKMSG_FRAME_H

#include <stddef.h>
#include <stdint.h>
#if __STDC_HOSTED__
#include <string.h>
#endif

/* Bytes in a frame header. */
#define SM_FRAME_HEADER_LEN 4

/*
 * libsockmsg's error codes, here so that a program using the codec alone
 * gets the same names and values; sockmsg.h includes this header.  The
 * codec itself returns only SM_ETOOBIG.
 */
enum sm_error {
    SM_ECLOSED = -1001,    /* peer closed the connection between frames */
    SM_ETRUNCATED = -1002, /* stream ended inside a frame */
    SM_ETOOBIG = -1003,    /* frame larger than the maximum frame size */
    SM_EMSGSIZE = -1004,   /* message larger than the caller's buffer */
    SM_ETIMEDOUT = -1005,  /* a timeout set in sm_options expired */
    SM_EADDR = -1006,      /* address malformed or not resolvable */
    SM_EINVAL = -1007,     /* invalid argument */
    SM_ENOMEM = -1008,     /* out of memory */
    SM_ENOCONN = -1009,    /* server: no open connection with that id */
    SM_ESTOPPED = -1010,   /* server: closed because the server stopped */
    SM_EFULL = -1011,      /* server: the connection's output queue is full */
    SM_EBROKEN = -1012,    /* a frame was cut and cannot be finished: the
                            * connection is dead, close it */
    SM_EAGAIN = -1013,     /* non-blocking: not now; wait for the events
                            * sm_conn_events names, then call again */
    SM_ETLS = -1014,       /* TLS failed: handshake, protocol or files
                            * (sm_last_error() has OpenSSL's reason) */
    SM_EVERIFY = -1015,    /* TLS: the peer's certificate did not verify */
    SM_ENOTLS = -1016      /* TLS asked for, but built without OpenSSL */
};

/* What sm_frame_decode did; errors are the negative SM_E* codes. */
enum sm_frame_status {
    SM_FRAME_MORE = 0, /* every byte given was consumed; no message yet */
    SM_FRAME_MSG = 1,  /* a whole message is in r->msg, r->len */
    SM_FRAME_ROOM = 2  /* payload bytes need a buffer of r->need bytes */
};

/*
 * An incremental decoder: the bytes of the frame in progress.  The caller
 * owns the struct (a static, a local or part of a larger object) and sets
 * it up with sm_frame_decoder_init; the fields are read-only outside this
 * header.  It holds no pointer into the caller's input between calls.
 */
typedef struct sm_frame_decoder {
    uint32_t max_frame; /* longest payload accepted */
    uint32_t len;       /* payload length, once the header is complete */
    uint32_t have;      /* payload bytes collected in buf so far */
    uint8_t *buf;       /* the caller's buffer for a frame split across chunks */
    size_t cap;         /* its size in bytes */
    uint8_t header[SM_FRAME_HEADER_LEN];
    uint8_t header_have; /* header bytes received: 0 to 4 */
} sm_frame_decoder;

/* The outcome of one sm_frame_decode call. */
typedef struct sm_frame_result {
    size_t used;        /* bytes of the input consumed, whatever the status */
    const uint8_t *msg; /* SM_FRAME_MSG: the payload (not NULL, even if empty) */
    uint32_t len;       /* SM_FRAME_MSG: payload length; else the announced
                         * length once the header is complete, or 0 */
    uint32_t need;      /* SM_FRAME_ROOM: the buffer size needed to take the
                         * payload bytes at hand; else 0 */
} sm_frame_result;

/*
 * sm_frame_header_put - write the header of a frame whose payload is len
 * bytes into out (4 bytes, most significant byte first).  A payload longer
 * than 2^32-1 bytes cannot be framed: the caller checks that first.
 */
static inline void sm_frame_header_put(uint8_t out[SM_FRAME_HEADER_LEN], uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}

/*
 * sm_frame_header_get - the payload length announced by the 4 header bytes
 * at in.  Every value is a valid header; whether it is too big is the
 * receiver's decision (sm_frame_decode compares it with max_frame).
 */
static inline uint32_t sm_frame_header_get(const uint8_t in[SM_FRAME_HEADER_LEN])
{
    /* Widen before shifting: on an AVR, int has only 16 bits. */
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | (uint32_t)in[3];
}

/* Internal: copies n bytes.  memcpy where there is a C library; a loop
 * when compiling freestanding, where <string.h> may not exist (a bare
 * Cortex-M toolchain has none) and memcpy may not be linked. */
static inline void sm_frame_copy_(uint8_t *dst, const uint8_t *src, size_t n)
{
#if __STDC_HOSTED__
    memcpy(dst, src, n);
#else
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
#endif
}

/*
 * sm_frame_decoder_init - set up d for a new stream.
 *
 * Frames announcing more than max_frame payload bytes are refused.  buf
 * (cap bytes, may be NULL with cap 0) is where a frame split across chunks
 * is collected; it stays the caller's, and must stay valid while d uses it.
 * With cap >= max_frame, sm_frame_decode never returns SM_FRAME_ROOM.
 * Cannot fail.
 */
static inline void sm_frame_decoder_init(sm_frame_decoder *d, uint32_t max_frame, uint8_t *buf,
                                         size_t cap)
{
    d->max_frame = max_frame;
    d->len = 0;
    d->have = 0;
    d->buf = buf;
    d->cap = cap;
    d->header_have = 0;
}

/*
 * sm_frame_decoder_set_buffer - give d a different buffer (cap bytes; NULL
 * with cap 0 for none), after SM_FRAME_ROOM or once a message has been
 * handled.  The first d->have bytes of the new buffer must be those of the
 * old one (realloc keeps them; d->have is 0 right after a message).  The
 * buffer stays the caller's.  Cannot fail.
 */
static inline void sm_frame_decoder_set_buffer(sm_frame_decoder *d, uint8_t *buf, size_t cap)
{
    d->buf = buf;
    d->cap = cap;
}

/*
 * sm_frame_decoder_in_frame - 1 if part of a frame has been received, so
 * the stream ending now would cut a message short (SM_ETRUNCATED); 0 if it
 * stands between frames (a clean end, SM_ECLOSED).
 */
static inline int sm_frame_decoder_in_frame(const sm_frame_decoder *d)
{
    return d->header_have > 0;
}

/*
 * sm_frame_decode - decode from the n bytes at in (n may be 0) until one
 * thing happens, and say what in *r.  r->used is always set to the bytes
 * consumed; call again with the rest (in + r->used) until all are used.
 * Returns:
 *
 *   SM_FRAME_MORE  all n bytes were consumed without completing a message.
 *   SM_FRAME_MSG   a whole message: r->len bytes at r->msg.  If the whole
 *                  frame lay in this chunk after the bytes consumed before,
 *                  r->msg points into in (no copy); otherwise it points to
 *                  d's buffer.  Either way it is valid until the input or
 *                  the buffer is reused, and the next call starts a new
 *                  frame.  An empty message is legal (r->len 0).
 *   SM_FRAME_ROOM  the frame is split across chunks and its payload bytes
 *                  at hand do not fit d's buffer: r->need is the buffer
 *                  size that takes them (at most the announced r->len).
 *                  Nothing after the header was consumed.  Give d a buffer
 *                  of at least r->need bytes (sm_frame_decoder_set_buffer)
 *                  and call again; calling again without one returns
 *                  SM_FRAME_ROOM again.  A caller that grows the buffer with
 *                  r->need never allocates more than the bytes that arrived.
 *   SM_ETOOBIG     the header announces more than max_frame bytes (r->len).
 *                  Checked as soon as the header is complete, before any of
 *                  the payload is stored.  The stream cannot be resynchronized:
 *                  every later call returns SM_ETOOBIG and consumes nothing.
 *
 * The input stays the caller's; d keeps no pointer into it.
 */
static inline int sm_frame_decode(sm_frame_decoder *d, const uint8_t *in, size_t n,
                                  sm_frame_result *r)
{
    size_t used = 0;
    r->msg = NULL;
    r->len = 0;
    r->need = 0;
    /* The header byte by byte: it may arrive in up to four chunks. */
    while (d->header_have < SM_FRAME_HEADER_LEN) {
        if (used == n) {
            r->used = used;
            return SM_FRAME_MORE;
        }
        d->header[d->header_have++] = in[used++];
        if (d->header_have == SM_FRAME_HEADER_LEN)
            d->len = sm_frame_header_get(d->header);
    }
    r->len = d->len;
    r->used = used;
    if (d->len > d->max_frame)
        return SM_ETOOBIG;

    uint32_t missing = d->len - d->have;
    size_t avail = n - used;
    if (d->have == 0 && avail >= missing) {
        /* The whole payload is in this chunk: hand it out where it is. */
        r->msg = in + used;
        r->used = used + (size_t)missing;
        d->header_have = 0;
        return SM_FRAME_MSG;
    }
    size_t take = avail < missing ? avail : (size_t)missing;
    if (take == 0)
        return SM_FRAME_MORE;
    /* have + take <= len <= UINT32_MAX: no overflow. */
    uint32_t need = d->have + (uint32_t)take;
    if (need > d->cap) {
        r->need = need;
        return SM_FRAME_ROOM;
    }
    sm_frame_copy_(d->buf + d->have, in + used, take);
    d->have = need;
    r->used = used + take;
    if (d->have < d->len)
        return SM_FRAME_MORE;
    r->msg = d->buf;
    d->header_have = 0;
    d->have = 0;
    return SM_FRAME_MSG;
}

#endif
