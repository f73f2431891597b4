#include "frame.h"

#include <sockmsg/sockmsg.h>

#include <stdlib.h>
#include <string.h>

void sm_decoder_init(sm_decoder *d, uint32_t max_frame)
{
    memset(d, 0, sizeof *d);
    d->max_frame = max_frame;
}

void sm_decoder_free(sm_decoder *d)
{
    free(d->payload);
    d->payload = NULL;
    d->cap = d->have = d->len = 0;
    d->header_have = 0;
}

int sm_decoder_in_frame(const sm_decoder *d)
{
    return d->header_have > 0;
}

/* Grows the partial-frame buffer to hold `need` bytes, at least doubling
 * so a frame dripping in costs few reallocations. */
static int reserve(sm_decoder *d, uint32_t need)
{
    if (need <= d->cap)
        return 0;
    uint32_t cap = d->cap > d->len / 2 ? d->len : d->cap * 2;
    if (cap < need)
        cap = need;
    uint8_t *p = realloc(d->payload, cap);
    if (!p)
        return SM_ENOMEM;
    d->payload = p;
    d->cap = cap;
    return 0;
}

/* Collects the header byte by byte; returns bytes used. */
static size_t take_header(sm_decoder *d, const uint8_t *data, size_t n)
{
    size_t take = SM_HEADER_LEN - d->header_have;
    if (take > n)
        take = n;
    memcpy(d->header + d->header_have, data, take);
    d->header_have = (uint8_t)(d->header_have + take);
    if (d->header_have == SM_HEADER_LEN)
        d->len = sm_frame_header_get(d->header);
    return take;
}

static int deliver(sm_decoder *d, const uint8_t *msg, sm_frame_fn *fn, void *arg)
{
    uint32_t len = d->len;
    d->header_have = 0;
    d->have = 0;
    int rc = fn(arg, msg, len);
    free(d->payload);
    d->payload = NULL;
    d->cap = 0;
    return rc;
}

int sm_decoder_feed(sm_decoder *d, const uint8_t *data, size_t n, sm_frame_fn *fn, void *arg)
{
    while (n > 0) {
        if (d->header_have < SM_HEADER_LEN) {
            size_t used = take_header(d, data, n);
            data += used;
            n -= used;
            if (d->header_have < SM_HEADER_LEN)
                return 0;
            if (d->len > d->max_frame)
                return SM_ETOOBIG;
        }
        size_t missing = d->len - d->have;
        if (d->have == 0 && n >= missing) {
            /* The whole payload is in this chunk: no copy. */
            int rc = deliver(d, data, fn, arg);
            data += missing;
            n -= missing;
            if (rc)
                return rc;
            continue;
        }
        if (n == 0)
            return 0;
        size_t take = n < missing ? n : missing;
        if (reserve(d, d->have + (uint32_t)take))
            return SM_ENOMEM;
        /* take > 0, so reserve() allocated payload (the analyzer cannot see it). */
        /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
        memcpy(d->payload + d->have, data, take);
        d->have += (uint32_t)take;
        data += take;
        n -= take;
        if (d->have == d->len) {
            int rc = deliver(d, d->payload, fn, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}
