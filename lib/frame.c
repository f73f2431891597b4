/*
 * The library's side of the codec: sm_decoder drives the public, malloc-free
 * decoder (include/sockmsg/frame.h) and supplies the one thing it leaves to
 * its caller, a buffer for a frame split across reads.  That buffer is
 * malloc()ed here, grown with the bytes that actually arrived and freed as
 * soon as its frame is delivered, so an idle connection holds none and a
 * peer announcing 16 MiB and sending 10 bytes costs about 10 bytes.
 */
#include "frame.h"

#include <sockmsg/sockmsg.h>

#include <stdlib.h>

void sm__decoder_init(sm_decoder *d, uint32_t max_frame)
{
    sm_frame_decoder_init(&d->codec, max_frame, NULL, 0);
}

/* Frees the partial-frame buffer and tells the codec it is gone. */
static void release(sm_decoder *d)
{
    free(d->codec.buf);
    sm_frame_decoder_set_buffer(&d->codec, NULL, 0);
}

void sm__decoder_free(sm_decoder *d)
{
    release(d);
    sm_frame_decoder_init(&d->codec, d->codec.max_frame, NULL, 0);
}

int sm__decoder_in_frame(const sm_decoder *d)
{
    return sm_frame_decoder_in_frame(&d->codec);
}

/* Grows the partial-frame buffer to hold `need` bytes, at least doubling
 * (but never past the announced length) so a frame dripping in costs few
 * reallocations.  realloc keeps the bytes collected so far, as the codec
 * requires. */
static int reserve(sm_decoder *d, uint32_t need)
{
    uint32_t len = d->codec.len, cap = (uint32_t)d->codec.cap;
    uint32_t grown = cap > len / 2 ? len : cap * 2;
    if (grown < need)
        grown = need;
    uint8_t *p = realloc(d->codec.buf, grown);
    if (!p)
        return SM_ENOMEM;
    sm_frame_decoder_set_buffer(&d->codec, p, grown);
    return 0;
}

int sm__decoder_feed(sm_decoder *d, const uint8_t *data, size_t n, sm_frame_fn *fn, void *arg)
{
    for (;;) {
        sm_frame_result r;
        int st = sm_frame_decode(&d->codec, data, n, &r);
        data += r.used;
        n -= r.used;
        if (st == SM_FRAME_MORE)
            return 0;
        if (st == SM_FRAME_ROOM) {
            if (reserve(d, r.need))
                return SM_ENOMEM;
        } else if (st == SM_FRAME_MSG) {
            int rc = fn(arg, r.msg, r.len);
            release(d); /* r.msg may point into it: only after the call */
            if (rc)
                return rc;
        } else {
            return st; /* SM_ETOOBIG */
        }
    }
}
