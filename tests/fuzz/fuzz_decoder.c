/*
 * The frame decoders against a reference that sees the whole stream at
 * once: for any bytes, split into chunks any way, each must deliver the
 * same messages and end in the same state (error or not, in the middle of
 * a frame or not).  Two decoders run over the same input:
 *
 * - the library's (lib/frame.c: sm_decoder, a callback per message and a
 *   malloc()ed buffer of its own), and
 * - the public, freestanding codec (include/sockmsg/frame.h) driven by
 *   hand: a caller's buffer of 0 to 299 bytes, grown to r.need whenever it
 *   answers SM_FRAME_ROOM.  Its results are checked as they come: bytes
 *   used, where a message points, what room it asks for.
 *
 * Input: 2 bytes of max_frame, 1 byte seeding the chunk sizes (and the
 * codec's first buffer size), the stream.
 */
#include "frame.h"

#include <sockmsg/sockmsg.h>

#include <stdlib.h>
#include <string.h>

struct expect {
    const uint8_t *stream;
    size_t len, pos; /* pos: where the reference's next message starts */
    uint32_t max_frame;
};

/* The reference: the next whole message in the stream, or why not.
 * Returns 1 with msg and len set, 0 at a clean or partial end, SM_ETOOBIG. */
static int reference_next(struct expect *e, const uint8_t **msg, uint32_t *len)
{
    size_t left = e->len - e->pos;
    if (left < SM_HEADER_LEN)
        return 0;
    const uint8_t *h = e->stream + e->pos;
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (n > e->max_frame)
        return SM_ETOOBIG;
    if (left - SM_HEADER_LEN < n)
        return 0;
    *msg = h + SM_HEADER_LEN;
    *len = n;
    e->pos += SM_HEADER_LEN + n;
    return 1;
}

/* A message must be the reference's next one, byte for byte. */
static void expect_message(struct expect *e, const uint8_t *msg, uint32_t len)
{
    const uint8_t *want;
    uint32_t want_len;
    if (reference_next(e, &want, &want_len) != 1 || want_len != len ||
        (len && memcmp(want, msg, len) != 0))
        abort(); /* the decoder made up, changed or reordered a message */
}

/* However a decoder stopped (rc: 0 or its error), the reference must stop
 * the same way: the same error, or the same partial frame. */
static void expect_end(struct expect *e, int rc, int in_frame)
{
    const uint8_t *msg;
    uint32_t len;
    int next = reference_next(e, &msg, &len);
    if (next == 1 || next != rc)
        abort();
    if (rc == 0 && in_frame != (e->pos < e->len))
        abort();
}

/* The chunk sizes, 1 to 97, from a small LCG. */
static size_t next_chunk(unsigned *seed, size_t left)
{
    *seed = *seed * 1103515245u + 12345u;
    size_t chunk = 1 + (*seed >> 16) % 97;
    return chunk < left ? chunk : left;
}

static int on_message(void *arg, const uint8_t *msg, uint32_t len)
{
    expect_message(arg, msg, len);
    return 0;
}

static void run_library(const uint8_t *stream, size_t len, uint32_t max_frame, unsigned seed)
{
    struct expect e = { .stream = stream, .len = len, .max_frame = max_frame };
    sm_decoder d;
    sm__decoder_init(&d, max_frame);
    int rc = 0;
    for (size_t pos = 0; pos < len && rc == 0;) {
        size_t chunk = next_chunk(&seed, len - pos);
        rc = sm__decoder_feed(&d, stream + pos, chunk, on_message, &e);
        pos += chunk;
    }
    expect_end(&e, rc, sm__decoder_in_frame(&d));
    sm__decoder_free(&d);
}

/* One sm_frame_decode result, checked against what the contract says. */
static void check_result(const sm_frame_decoder *d, int st, const sm_frame_result *r,
                         const uint8_t *in, size_t n)
{
    if (r->used > n)
        abort();
    if (st == SM_FRAME_MORE && r->used != n)
        abort(); /* MORE means every byte was taken */
    if (st == SM_FRAME_MSG) {
        int in_place = r->msg >= in && r->msg + r->len <= in + n;
        if (!in_place && r->msg != d->buf)
            abort();
        if (sm_frame_decoder_in_frame(d))
            abort();
    }
    if (st == SM_FRAME_ROOM && (r->need <= d->cap || r->need > r->len ||
                                r->need - d->have > n - r->used || r->used > SM_HEADER_LEN))
        abort(); /* room beyond the bytes at hand, or payload consumed */
    if (st == SM_ETOOBIG && (r->len <= d->max_frame || r->used > SM_HEADER_LEN))
        abort();
}

static void run_codec(const uint8_t *stream, size_t len, uint32_t max_frame, unsigned seed)
{
    struct expect e = { .stream = stream, .len = len, .max_frame = max_frame };
    size_t cap = seed % 4 == 0 ? 0 : seed * 37 % 300;
    uint8_t *buf = cap ? malloc(cap) : NULL;
    if (cap && !buf)
        abort();
    sm_frame_decoder d;
    sm_frame_decoder_init(&d, max_frame, buf, cap);
    int st = SM_FRAME_MORE;
    for (size_t pos = 0; pos < len && st >= 0;) {
        size_t left = next_chunk(&seed, len - pos);
        const uint8_t *in = stream + pos;
        pos += left;
        while (left > 0 && st >= 0) {
            sm_frame_result r;
            st = sm_frame_decode(&d, in, left, &r);
            check_result(&d, st, &r, in, left);
            if (st == SM_FRAME_MSG)
                expect_message(&e, r.msg, r.len);
            if (st == SM_FRAME_ROOM) {
                uint8_t *p = realloc(d.buf, r.need);
                if (!p)
                    abort();
                sm_frame_decoder_set_buffer(&d, p, r.need);
            }
            in += r.used;
            left -= r.used;
        }
    }
    expect_end(&e, st < 0 ? st : 0, sm_frame_decoder_in_frame(&d));
    /* A refused stream stays refused and consumes nothing more. */
    if (st < 0) {
        sm_frame_result r;
        if (sm_frame_decode(&d, stream, len, &r) != st || r.used != 0)
            abort();
    }
    free(d.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint32_t max_frame = (uint32_t)data[0] << 8 | data[1];
    run_library(data + 3, size - 3, max_frame, data[2]);
    run_codec(data + 3, size - 3, max_frame, data[2]);
    return 0;
}
