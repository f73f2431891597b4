/*
 * The incremental frame decoder against a reference that sees the whole
 * stream at once: for any bytes, split into chunks any way, both must
 * deliver the same messages and end in the same state (error or not, in
 * the middle of a frame or not).
 *
 * Input: 2 bytes of max_frame, 1 byte seeding the chunk sizes, the stream.
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

static int on_message(void *arg, const uint8_t *msg, uint32_t len)
{
    const uint8_t *want;
    uint32_t want_len;
    if (reference_next(arg, &want, &want_len) != 1 || want_len != len ||
        (len && memcmp(want, msg, len) != 0))
        abort(); /* the decoder made up, changed or reordered a message */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    struct expect e = { .stream = data + 3,
                        .len = size - 3,
                        .max_frame = (uint32_t)data[0] << 8 | data[1] };
    unsigned seed = data[2];
    sm_decoder d;
    sm_decoder_init(&d, e.max_frame);
    int rc = 0;
    for (size_t pos = 0; pos < e.len && rc == 0;) {
        seed = seed * 1103515245u + 12345u;
        size_t chunk = 1 + (seed >> 16) % 97;
        if (chunk > e.len - pos)
            chunk = e.len - pos;
        rc = sm_decoder_feed(&d, e.stream + pos, chunk, on_message, &e);
        pos += chunk;
    }
    /* Whatever the reference would do next must match how the decoder
     * stopped: the same error, or the same partial frame. */
    const uint8_t *msg;
    uint32_t len;
    int next = reference_next(&e, &msg, &len);
    if (next == 1 || next != rc)
        abort();
    if (rc == 0 && sm_decoder_in_frame(&d) != (e.pos < e.len))
        abort();
    sm_decoder_free(&d);
    return 0;
}
