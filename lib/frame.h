/*
 * frame - the library's stream decoder, on top of the public codec
 * (include/sockmsg/frame.h): the same frames, plus a partial-frame buffer
 * that it allocates and grows itself, for the event-driven server.
 *
 * A frame is a 4-byte unsigned big-endian payload length, then the payload.
 */
#ifndef SM_LIB_FRAME_H
#define SM_LIB_FRAME_H

#include <sockmsg/frame.h>

#include <stddef.h>
#include <stdint.h>

/* The library's name for it; sm_frame_header_put and sm_frame_header_get
 * come from the public codec. */
#define SM_HEADER_LEN SM_FRAME_HEADER_LEN

/* Called once per complete message; msg is valid only during the call.
 * A nonzero return stops sm__decoder_feed, which returns that value. */
typedef int sm_frame_fn(void *arg, const uint8_t *msg, uint32_t len);

/*
 * Incremental decoder for a pushed byte stream (bytes arrive in any
 * split).  Complete frames inside one fed chunk are delivered straight
 * from it; only a frame that straddles chunks is copied, into a buffer
 * that grows with the bytes actually received (never to the announced
 * length up front) and is released as soon as the frame is delivered.
 */
typedef struct sm_decoder {
    sm_frame_decoder codec; /* its buffer, when set, is malloc()ed by us */
} sm_decoder;

void sm__decoder_init(sm_decoder *d, uint32_t max_frame);

/* Decodes n bytes.  Returns 0, the callback's nonzero value, SM_ETOOBIG
 * (a header over max_frame: nothing was allocated for it) or SM_ENOMEM.
 * After an error the stream is unusable: free the decoder. */
int sm__decoder_feed(sm_decoder *d, const uint8_t *data, size_t n, sm_frame_fn *fn, void *arg);

/* 1 if part of a frame is held, so the stream ending now is truncation. */
int sm__decoder_in_frame(const sm_decoder *d);

/* Releases the partial-frame buffer; the decoder may be fed again. */
void sm__decoder_free(sm_decoder *d);

#endif
