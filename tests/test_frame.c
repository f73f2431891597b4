/* The frame codec alone: header encoding and the incremental decoder. */
#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

#define MAX_SEEN 64

struct seen {
    int count;
    uint32_t len[MAX_SEEN];
    uint8_t first[MAX_SEEN];
    int stop_after; /* return 1 from the callback after this many frames */
};

static int record(void *arg, const uint8_t *msg, uint32_t len)
{
    struct seen *s = arg;
    if (s->count < MAX_SEEN) {
        s->len[s->count] = len;
        s->first[s->count] = len ? msg[0] : 0;
    }
    s->count++;
    return s->stop_after && s->count >= s->stop_after;
}

Test(frame, header_boundaries_round_trip)
{
    const uint32_t lens[] = {
        0, 1, 255, 256, 1u << 24, SM_DEFAULT_MAX_FRAME, SM_DEFAULT_MAX_FRAME + 1, UINT32_MAX
    };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t h[SM_HEADER_LEN];
        sm_frame_header_put(h, lens[i]);
        cr_assert_eq(sm_frame_header_get(h), lens[i], "len %u", lens[i]);
    }
}

Test(frame, header_is_big_endian)
{
    uint8_t h[SM_HEADER_LEN];
    sm_frame_header_put(h, 0x01020304);
    cr_assert_eq(h[0], 1);
    cr_assert_eq(h[1], 2);
    cr_assert_eq(h[2], 3);
    cr_assert_eq(h[3], 4);
    sm_frame_header_put(h, 4);
    cr_assert(memcmp(h, "\0\0\0\4", 4) == 0);
}

/* Encodes frames of the given lengths (payload byte = index + 1). */
static uint8_t *encode(const uint32_t *lens, int n, size_t *out_len)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += SM_HEADER_LEN + lens[i];
    uint8_t *buf = malloc(total ? total : 1), *p = buf;
    for (int i = 0; i < n; i++) {
        sm_frame_header_put(p, lens[i]);
        memset(p + SM_HEADER_LEN, i + 1, lens[i]);
        p += SM_HEADER_LEN + lens[i];
    }
    *out_len = total;
    return buf;
}

static void check_split(const uint32_t *lens, int n, size_t chunk)
{
    size_t total;
    uint8_t *wire = encode(lens, n, &total);
    sm_decoder d;
    struct seen s = { 0 };
    sm__decoder_init(&d, SM_DEFAULT_MAX_FRAME);
    for (size_t off = 0; off < total; off += chunk) {
        size_t take = total - off < chunk ? total - off : chunk;
        cr_assert_eq(sm__decoder_feed(&d, wire + off, take, record, &s), 0);
    }
    cr_assert_eq(s.count, n, "chunk %zu: %d frames, want %d", chunk, s.count, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(s.len[i], lens[i], "chunk %zu frame %d", chunk, i);
        if (lens[i])
            cr_assert_eq(s.first[i], i + 1);
    }
    cr_assert_not(sm__decoder_in_frame(&d));
    cr_assert_null(d.codec.buf, "no buffer kept between frames");
    sm__decoder_free(&d);
    free(wire);
}

Test(frame, decoder_any_split)
{
    const uint32_t lens[] = { 0, 1, 4, 0, 300, 70000, 2, 0 };
    const size_t chunks[] = { 1, 2, 3, 4, 5, 7, 64, 4096, 1 << 20 };
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
        check_split(lens, 8, chunks[i]);
}

Test(frame, decoder_header_fed_byte_by_byte)
{
    sm_decoder d;
    struct seen s = { 0 };
    const uint8_t wire[] = { 0, 0, 0, 2, 'h', 'i' };
    sm__decoder_init(&d, 100);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(sm__decoder_feed(&d, wire + i, 1, record, &s), 0);
        cr_assert(sm__decoder_in_frame(&d), "header byte %zu is part of a frame", i);
    }
    cr_assert_eq(sm__decoder_feed(&d, wire + 3, 3, record, &s), 0);
    cr_assert_eq(s.count, 1);
    cr_assert_eq(s.len[0], 2);
    cr_assert_eq(s.first[0], 'h');
    sm__decoder_free(&d);
}

Test(frame, decoder_max_is_accepted_max_plus_one_rejected)
{
    sm_decoder d;
    struct seen s = { 0 };
    uint8_t h[SM_HEADER_LEN];
    sm__decoder_init(&d, 1000);
    sm_frame_header_put(h, 1000);
    cr_assert_eq(sm__decoder_feed(&d, h, 4, record, &s), 0);
    cr_assert(sm__decoder_in_frame(&d));
    sm__decoder_free(&d);

    sm__decoder_init(&d, 1000);
    sm_frame_header_put(h, 1001);
    cr_assert_eq(sm__decoder_feed(&d, h, 4, record, &s), SM_ETOOBIG);
    cr_assert_null(d.codec.buf, "nothing allocated for an oversize frame");
    sm__decoder_free(&d);
}

Test(frame, decoder_rejects_huge_header_split)
{
    sm_decoder d;
    struct seen s = { 0 };
    const uint8_t h[] = { 0xff, 0xff, 0xff, 0xff };
    sm__decoder_init(&d, SM_DEFAULT_MAX_FRAME);
    cr_assert_eq(sm__decoder_feed(&d, h, 2, record, &s), 0);
    cr_assert_eq(sm__decoder_feed(&d, h + 2, 2, record, &s), SM_ETOOBIG);
    cr_assert_null(d.codec.buf);
    cr_assert_eq(s.count, 0);
    sm__decoder_free(&d);
}

Test(frame, decoder_partial_buffer_tracks_received_bytes)
{
    sm_decoder d;
    struct seen s = { 0 };
    uint8_t h[SM_HEADER_LEN], byte = 7;
    sm__decoder_init(&d, SM_DEFAULT_MAX_FRAME);
    sm_frame_header_put(h, SM_DEFAULT_MAX_FRAME);
    cr_assert_eq(sm__decoder_feed(&d, h, 4, record, &s), 0);
    cr_assert_eq(sm__decoder_feed(&d, &byte, 1, record, &s), 0);
    /* One byte of a 16 MiB frame must not cost 16 MiB. */
    cr_assert_leq(d.codec.cap, 1024, "cap %zu after one byte", d.codec.cap);
    sm__decoder_free(&d);
}

Test(frame, decoder_stops_when_callback_says_so)
{
    const uint32_t lens[] = { 1, 2, 3 };
    size_t total;
    uint8_t *wire = encode(lens, 3, &total);
    sm_decoder d;
    struct seen s = { .stop_after = 2 };
    sm__decoder_init(&d, 100);
    cr_assert_eq(sm__decoder_feed(&d, wire, total, record, &s), 1);
    cr_assert_eq(s.count, 2);
    sm__decoder_free(&d);
    free(wire);
}

Test(frame, decoder_truncation_is_visible)
{
    sm_decoder d;
    struct seen s = { 0 };
    const uint8_t wire[] = { 0, 0, 0, 5, 'a', 'b' };
    sm__decoder_init(&d, 100);
    cr_assert_not(sm__decoder_in_frame(&d), "a fresh stream ending is a clean close");
    cr_assert_eq(sm__decoder_feed(&d, wire, sizeof wire, record, &s), 0);
    cr_assert(sm__decoder_in_frame(&d));
    cr_assert_eq(s.count, 0);
    sm__decoder_free(&d);
    cr_assert_not(sm__decoder_in_frame(&d));
}
