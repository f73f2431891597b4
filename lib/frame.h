/*
 * frame - the wire format as a pure codec: no sockets, no I/O.
 *
 * A frame is a 4-byte unsigned big-endian payload length, then the payload.
 */
#ifndef SM_LIB_FRAME_H
#define SM_LIB_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SM_HEADER_LEN 4

/* Inline: they run once per message on the fast paths. */
static inline void sm_frame_header_put(uint8_t out[SM_HEADER_LEN], uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}

static inline uint32_t sm_frame_header_get(const uint8_t in[SM_HEADER_LEN])
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | (uint32_t)in[3];
}

/* Called once per complete message; msg is valid only during the call.
 * A nonzero return stops sm_decoder_feed, which returns that value. */
typedef int sm_frame_fn(void *arg, const uint8_t *msg, uint32_t len);

/*
 * Incremental decoder for a pushed byte stream (bytes arrive in any
 * split).  Complete frames inside one fed chunk are delivered straight
 * from it; only a frame that straddles chunks is copied, into a buffer
 * that grows with the bytes actually received (never to the announced
 * length up front) and is released as soon as the frame is delivered.
 */
typedef struct sm_decoder {
    uint32_t max_frame;
    uint32_t len;  /* payload length, once header_have == 4 */
    uint32_t have; /* payload bytes collected in payload */
    uint32_t cap;  /* allocated size of payload */
    uint8_t header[SM_HEADER_LEN];
    uint8_t header_have;
    uint8_t *payload;
} sm_decoder;

void sm_decoder_init(sm_decoder *d, uint32_t max_frame);

/* Decodes n bytes.  Returns 0, the callback's nonzero value, SM_ETOOBIG
 * (a header over max_frame: nothing was allocated for it) or SM_ENOMEM.
 * After an error the stream is unusable: free the decoder. */
int sm_decoder_feed(sm_decoder *d, const uint8_t *data, size_t n, sm_frame_fn *fn, void *arg);

/* 1 if part of a frame is held, so the stream ending now is truncation. */
int sm_decoder_in_frame(const sm_decoder *d);

/* Releases the partial-frame buffer; the decoder may be fed again. */
void sm_decoder_free(sm_decoder *d);

#endif
