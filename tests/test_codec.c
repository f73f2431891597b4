/*
 * The public, freestanding codec (include/sockmsg/frame.h) on its own:
 * headers, and the pull decoder fed in every chunking, with a fixed buffer
 * and with one grown on SM_FRAME_ROOM the way the library grows its own.
 *
 * frame.h comes before sockmsg.h on purpose: the two share enum sm_error,
 * and this order is the one that needs sockmsg.h to skip its copy.
 */
#include <sockmsg/frame.h>

#include <criterion/criterion.h>
#include <sockmsg/sockmsg.h>

#include <stdlib.h>
#include <string.h>

/* Encodes frames of the given lengths; payload byte k of frame i is
 * (i * 31 + k) % 251 + 1, so a shifted or mixed-up payload never matches. */
static uint8_t *encode(const uint32_t *lens, int n, size_t *out_len)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += SM_FRAME_HEADER_LEN + lens[i];
    uint8_t *buf = malloc(total ? total : 1), *p = buf;
    cr_assert_not_null(buf);
    for (int i = 0; i < n; i++) {
        sm_frame_header_put(p, lens[i]);
        p += SM_FRAME_HEADER_LEN;
        for (uint32_t k = 0; k < lens[i]; k++)
            *p++ = (uint8_t)((i * 31 + k) % 251 + 1);
    }
    *out_len = total;
    return buf;
}

static void check_payload(const uint8_t *msg, uint32_t len, int i)
{
    for (uint32_t k = 0; k < len; k++)
        cr_assert_eq(msg[k], (i * 31 + k) % 251 + 1, "frame %d byte %u", i, k);
}

/* Feeds wire in chunks of `chunk` bytes to a decoder with a buffer of
 * max_frame bytes; checks every message, where it was handed out from,
 * and that the stream ends between frames. */
static void check_chunking(const uint32_t *lens, int n, uint32_t max_frame, size_t chunk)
{
    size_t total;
    uint8_t *wire = encode(lens, n, &total);
    uint8_t *buf = malloc(max_frame ? max_frame : 1);
    cr_assert_not_null(buf);
    sm_frame_decoder d;
    sm_frame_decoder_init(&d, max_frame, buf, max_frame);
    int seen = 0;
    for (size_t off = 0; off < total; off += chunk) {
        const uint8_t *in = wire + off;
        size_t left = total - off < chunk ? total - off : chunk;
        const uint8_t *end = in + left;
        while (left > 0) {
            sm_frame_result r;
            int st = sm_frame_decode(&d, in, left, &r);
            cr_assert_leq(r.used, left);
            if (st == SM_FRAME_MSG) {
                cr_assert_lt(seen, n, "chunk %zu: more messages than frames", chunk);
                cr_assert_eq(r.len, lens[seen], "chunk %zu: frame %d", chunk, seen);
                cr_assert_not_null(r.msg);
                /* In place (inside this chunk) or collected in buf. */
                int in_place = r.msg >= in && r.msg + r.len <= end;
                cr_assert(in_place || r.msg == buf, "chunk %zu: frame %d from nowhere", chunk,
                          seen);
                check_payload(r.msg, r.len, seen);
                seen++;
            } else {
                cr_assert_eq(st, SM_FRAME_MORE, "chunk %zu: status %d", chunk, st);
                cr_assert_eq(r.used, left, "SM_FRAME_MORE consumes everything");
            }
            in += r.used;
            left -= r.used;
        }
    }
    cr_assert_eq(seen, n, "chunk %zu: %d messages, want %d", chunk, seen, n);
    cr_assert_not(sm_frame_decoder_in_frame(&d));
    free(buf);
    free(wire);
}

Test(codec, header_round_trips_and_is_big_endian)
{
    const uint32_t lens[] = { 0, 1, 255, 256, 65535, 65536, 1u << 24, 0x80000000u, UINT32_MAX };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t h[SM_FRAME_HEADER_LEN];
        sm_frame_header_put(h, lens[i]);
        cr_assert_eq(sm_frame_header_get(h), lens[i], "len %u", lens[i]);
    }
    uint8_t h[SM_FRAME_HEADER_LEN];
    sm_frame_header_put(h, 0x01020304);
    cr_assert(memcmp(h, "\1\2\3\4", 4) == 0);
    sm_frame_header_put(h, 4);
    cr_assert(memcmp(h, "\0\0\0\4", 4) == 0, "TEST's header is 00 00 00 04");
}

Test(codec, error_codes_are_the_librarys)
{
    cr_assert_eq(SM_ETOOBIG, -1003);
    cr_assert_eq(SM_ECLOSED, -1001);
    cr_assert_eq(SM_ETRUNCATED, -1002);
    cr_assert_eq(SM_FRAME_MORE, 0, "0 means nothing happened, as elsewhere");
}

Test(codec, any_chunking)
{
    const uint32_t lens[] = { 0, 1, 3, 4, 5, 0, 255, 256, 1000, 0, 2 };
    for (size_t chunk = 1; chunk <= 20; chunk++)
        check_chunking(lens, 11, 1000, chunk);
    const size_t big[] = { 64, 255, 256, 257, 1003, 1004, 4096 };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        check_chunking(lens, 11, 1000, big[i]);
}

Test(codec, one_byte_chunks)
{
    const uint8_t wire[] = { 0, 0, 0, 2, 'h', 'i', 0, 0, 0, 0, 0, 0, 0, 1, 'x' };
    uint8_t buf[8];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_decoder_init(&d, sizeof buf, buf, sizeof buf);
    const char *want[] = { "hi", "", "x" };
    int seen = 0;
    for (size_t i = 0; i < sizeof wire; i++) {
        int st = sm_frame_decode(&d, wire + i, 1, &r);
        cr_assert_eq(r.used, 1, "byte %zu consumed", i);
        if (st == SM_FRAME_MSG) {
            cr_assert_lt(seen, 3);
            cr_assert_eq(r.len, strlen(want[seen]));
            cr_assert(memcmp(r.msg, want[seen], r.len) == 0, "message %d", seen);
            /* "hi" came a byte at a time, so it was collected; "x" and
             * the empty message each lie whole in their last chunk. */
            cr_assert(r.len > 1 ? r.msg == buf : r.msg == wire + i + 1 - r.len);
            cr_assert_not(sm_frame_decoder_in_frame(&d));
            seen++;
        } else {
            cr_assert_eq(st, SM_FRAME_MORE);
            cr_assert(sm_frame_decoder_in_frame(&d), "byte %zu is inside a frame", i);
        }
    }
    cr_assert_eq(seen, 3);
}

Test(codec, empty_messages)
{
    const uint8_t wire[] = { 0, 0, 0, 0, 0, 0, 0, 0 };
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_decoder_init(&d, 0, NULL, 0); /* max 0: only empty messages */
    cr_assert_eq(sm_frame_decode(&d, wire, sizeof wire, &r), SM_FRAME_MSG);
    cr_assert_eq(r.used, 4);
    cr_assert_eq(r.len, 0);
    cr_assert_eq(r.msg, wire + 4, "not NULL, even for no bytes");
    cr_assert_eq(sm_frame_decode(&d, wire + 4, 4, &r), SM_FRAME_MSG);
    cr_assert_eq(r.used, 4);
    cr_assert_not(sm_frame_decoder_in_frame(&d));
    const uint8_t one[] = { 0, 0, 0, 1, 'x' };
    cr_assert_eq(sm_frame_decode(&d, one, sizeof one, &r), SM_ETOOBIG, "max 0 refuses 1 byte");
}

Test(codec, back_to_back_frames_in_one_chunk_are_not_copied)
{
    const uint32_t lens[] = { 3, 0, 70000, 1 };
    size_t total;
    uint8_t *wire = encode(lens, 4, &total);
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_decoder_init(&d, 70000, NULL, 0); /* no buffer: must not need one */
    const uint8_t *in = wire;
    size_t left = total;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sm_frame_decode(&d, in, left, &r), SM_FRAME_MSG, "frame %d", i);
        cr_assert_eq(r.len, lens[i]);
        cr_assert_eq(r.msg, in + SM_FRAME_HEADER_LEN, "frame %d handed out in place", i);
        cr_assert_eq(r.used, SM_FRAME_HEADER_LEN + lens[i]);
        check_payload(r.msg, r.len, i);
        in += r.used;
        left -= r.used;
    }
    cr_assert_eq(left, 0);
    cr_assert_eq(sm_frame_decode(&d, in, 0, &r), SM_FRAME_MORE);
    cr_assert_eq(r.used, 0);
    free(wire);
}

Test(codec, oversize_header_is_refused_before_anything_is_stored)
{
    uint8_t wire[4 + 9];
    uint8_t buf[16];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_header_put(wire, 9);
    memset(wire + 4, 'p', 9);
    memset(buf, 0xAA, sizeof buf);
    sm_frame_decoder_init(&d, 8, buf, sizeof buf);
    cr_assert_eq(sm_frame_decode(&d, wire, sizeof wire, &r), SM_ETOOBIG);
    cr_assert_eq(r.used, 4, "the header, and not one payload byte");
    cr_assert_eq(r.len, 9, "the announced length is reported");
    cr_assert_null(r.msg);
    for (size_t i = 0; i < sizeof buf; i++)
        cr_assert_eq(buf[i], 0xAA, "buffer byte %zu written", i);
    /* The stream cannot be resynchronized: it stays refused. */
    cr_assert_eq(sm_frame_decode(&d, wire + 4, 9, &r), SM_ETOOBIG);
    cr_assert_eq(r.used, 0);
    for (size_t i = 0; i < sizeof buf; i++)
        cr_assert_eq(buf[i], 0xAA, "buffer byte %zu written", i);

    /* Checked when the header completes, even if it comes in pieces. */
    const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 'p' };
    sm_frame_decoder_init(&d, SM_DEFAULT_MAX_FRAME, buf, sizeof buf);
    cr_assert_eq(sm_frame_decode(&d, huge, 2, &r), SM_FRAME_MORE);
    cr_assert_eq(sm_frame_decode(&d, huge + 2, 3, &r), SM_ETOOBIG);
    cr_assert_eq(r.used, 2);
    cr_assert_eq(r.len, UINT32_MAX);
}

Test(codec, exactly_max_frame_is_accepted)
{
    uint8_t wire[4 + 8];
    uint8_t buf[8];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_header_put(wire, 8);
    memcpy(wire + 4, "12345678", 8);
    sm_frame_decoder_init(&d, 8, buf, sizeof buf);
    cr_assert_eq(sm_frame_decode(&d, wire, 6, &r), SM_FRAME_MORE);
    cr_assert_eq(sm_frame_decode(&d, wire + 6, 6, &r), SM_FRAME_MSG);
    cr_assert_eq(r.len, 8);
    cr_assert_eq(r.msg, buf);
    cr_assert(memcmp(buf, "12345678", 8) == 0);
    /* The largest header there is, with the largest maximum. */
    sm_frame_decoder_init(&d, UINT32_MAX, NULL, 0);
    const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 'p' };
    cr_assert_eq(sm_frame_decode(&d, huge, sizeof huge, &r), SM_FRAME_ROOM);
    cr_assert_eq(r.len, UINT32_MAX);
    cr_assert_eq(r.need, 1);
}

Test(codec, buffer_too_small_asks_for_room_and_stores_nothing)
{
    uint8_t wire[4 + 10];
    uint8_t small[4], big[16];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_header_put(wire, 10);
    memcpy(wire + 4, "0123456789", 10);
    memset(small, 0xAA, sizeof small);
    sm_frame_decoder_init(&d, 100, small, sizeof small);
    cr_assert_eq(sm_frame_decode(&d, wire, 10, &r), SM_FRAME_ROOM);
    cr_assert_eq(r.used, 4, "the header only");
    cr_assert_eq(r.need, 6, "room for the 6 payload bytes at hand");
    cr_assert_eq(r.len, 10);
    cr_assert(sm_frame_decoder_in_frame(&d));
    for (size_t i = 0; i < sizeof small; i++)
        cr_assert_eq(small[i], 0xAA, "small buffer byte %zu written", i);
    /* Asking again without room changes nothing. */
    cr_assert_eq(sm_frame_decode(&d, wire + 4, 6, &r), SM_FRAME_ROOM);
    cr_assert_eq(r.used, 0);
    cr_assert_eq(r.need, 6);
    sm_frame_decoder_set_buffer(&d, big, sizeof big);
    cr_assert_eq(sm_frame_decode(&d, wire + 4, 6, &r), SM_FRAME_MORE);
    cr_assert_eq(r.used, 6);
    cr_assert_eq(sm_frame_decode(&d, wire + 10, 4, &r), SM_FRAME_MSG);
    cr_assert_eq(r.msg, big);
    cr_assert_eq(r.len, 10);
    cr_assert(memcmp(big, "0123456789", 10) == 0);
    cr_assert_not(sm_frame_decoder_in_frame(&d));
}

Test(codec, room_grows_with_the_bytes_received_not_the_announced_length)
{
    /* A peer announces 16 MiB and sends 10 bytes: a caller that grows its
     * buffer by r.need holds 10 bytes, not 16 MiB. */
    uint8_t wire[4 + 10];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_header_put(wire, SM_DEFAULT_MAX_FRAME);
    memset(wire + 4, 'p', 10);
    sm_frame_decoder_init(&d, SM_DEFAULT_MAX_FRAME, NULL, 0);
    cr_assert_eq(sm_frame_decode(&d, wire, 7, &r), SM_FRAME_ROOM);
    cr_assert_eq(r.need, 3);
    cr_assert_eq(r.len, SM_DEFAULT_MAX_FRAME);
    uint8_t *buf = malloc(r.need);
    cr_assert_not_null(buf);
    sm_frame_decoder_set_buffer(&d, buf, r.need);
    cr_assert_eq(sm_frame_decode(&d, wire + 4, 3, &r), SM_FRAME_MORE);
    cr_assert_eq(sm_frame_decode(&d, wire + 7, 7, &r), SM_FRAME_ROOM);
    cr_assert_eq(r.need, 10, "3 held + 7 at hand");
    free(buf);
}

/* The library's way: start with no buffer, realloc to r.need on
 * SM_FRAME_ROOM, free after each message.  70,000 bytes in odd chunks. */
Test(codec, grown_buffer_collects_a_large_frame)
{
    const uint32_t lens[] = { 70000, 5, 70000 };
    size_t total;
    uint8_t *wire = encode(lens, 3, &total);
    sm_frame_decoder d;
    sm_frame_decoder_init(&d, 70000, NULL, 0);
    size_t received = 0, most = 0;
    int seen = 0;
    for (size_t off = 0; off < total; off += 997) {
        const uint8_t *in = wire + off;
        size_t left = total - off < 997 ? total - off : 997;
        received += left;
        while (left > 0) {
            sm_frame_result r;
            int st = sm_frame_decode(&d, in, left, &r);
            in += r.used;
            left -= r.used;
            if (st == SM_FRAME_ROOM) {
                cr_assert_gt(r.need, d.cap);
                cr_assert_leq(r.need, received, "asked for more than arrived");
                uint8_t *p = realloc(d.buf, r.need);
                cr_assert_not_null(p);
                sm_frame_decoder_set_buffer(&d, p, r.need);
                most = r.need > most ? r.need : most;
            } else if (st == SM_FRAME_MSG) {
                cr_assert_eq(r.len, lens[seen]);
                check_payload(r.msg, r.len, seen);
                seen++;
                free(d.buf);
                sm_frame_decoder_set_buffer(&d, NULL, 0);
            } else {
                cr_assert_eq(st, SM_FRAME_MORE);
            }
        }
    }
    cr_assert_eq(seen, 3);
    cr_assert_eq(most, 70000);
    free(wire);
}

Test(codec, no_input_is_need_more)
{
    const uint8_t wire[] = { 0, 0, 0, 3, 'a' };
    uint8_t buf[4];
    sm_frame_decoder d;
    sm_frame_result r;
    sm_frame_decoder_init(&d, 4, buf, sizeof buf);
    cr_assert_eq(sm_frame_decode(&d, NULL, 0, &r), SM_FRAME_MORE);
    cr_assert_eq(r.used, 0);
    cr_assert_not(sm_frame_decoder_in_frame(&d), "nothing received: a clean end");
    cr_assert_eq(sm_frame_decode(&d, wire, 2, &r), SM_FRAME_MORE);
    cr_assert_eq(sm_frame_decode(&d, NULL, 0, &r), SM_FRAME_MORE);
    cr_assert(sm_frame_decoder_in_frame(&d), "half a header: ending now is truncation");
    cr_assert_eq(sm_frame_decode(&d, wire + 2, 3, &r), SM_FRAME_MORE);
    cr_assert_eq(sm_frame_decode(&d, NULL, 0, &r), SM_FRAME_MORE);
    cr_assert_eq(r.len, 3, "the announced length, once known");
    cr_assert(sm_frame_decoder_in_frame(&d));
}

/* The reference decoder: sees the whole stream at once.  Returns 1 with
 * the next message, 0 if the stream ends before one is complete, or
 * SM_ETOOBIG. */
static int reference_next(const uint8_t *s, size_t len, size_t *pos, uint32_t max,
                          const uint8_t **msg, uint32_t *n)
{
    if (len - *pos < SM_FRAME_HEADER_LEN)
        return 0;
    uint32_t k = sm_frame_header_get(s + *pos);
    if (k > max)
        return SM_ETOOBIG;
    if (len - *pos - SM_FRAME_HEADER_LEN < k)
        return 0;
    *msg = s + *pos + SM_FRAME_HEADER_LEN;
    *n = k;
    *pos += SM_FRAME_HEADER_LEN + k;
    return 1;
}

/* Random streams (mostly well-formed frames, sometimes a header over the
 * maximum, sometimes cut short), random chunks, and either a fixed buffer
 * or one grown on SM_FRAME_ROOM: the same messages as the reference, and
 * the same end. */
Test(codec, random_streams_match_the_reference)
{
    unsigned seed = 12345;
#define RAND() (seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff)
    uint8_t stream[600];
    uint8_t fixed[70];
    for (int iter = 0; iter < 3000; iter++) {
        uint32_t max = RAND() % 70;
        size_t len = 0;
        while (len + 4 < sizeof stream && RAND() % 8) {
            uint32_t n = RAND() % 16 == 0 ? max + 1 + RAND() % 3 : RAND() % (max + 1);
            if (len + 4 + n > sizeof stream)
                break;
            sm_frame_header_put(stream + len, n);
            for (uint32_t k = 0; k < n; k++)
                stream[len + 4 + k] = (uint8_t)RAND();
            len += 4 + n;
        }
        if (len && RAND() % 3 == 0)
            len -= 1 + RAND() % (len < 6 ? len : 6); /* cut short */
        int grow = RAND() % 2;
        sm_frame_decoder d;
        sm_frame_decoder_init(&d, max, grow ? NULL : fixed, grow ? 0 : sizeof fixed);
        size_t ref = 0;
        int st = SM_FRAME_MORE;
        for (size_t pos = 0; pos < len && st >= 0;) {
            size_t left = 1 + RAND() % 23;
            left = left > len - pos ? len - pos : left;
            const uint8_t *in = stream + pos;
            pos += left;
            while (left > 0) {
                sm_frame_result r;
                st = sm_frame_decode(&d, in, left, &r);
                cr_assert_leq(r.used, left);
                in += r.used;
                left -= r.used;
                if (st == SM_FRAME_MSG) {
                    const uint8_t *want;
                    uint32_t n;
                    cr_assert_eq(reference_next(stream, len, &ref, max, &want, &n), 1,
                                 "iteration %d: a message the reference does not have", iter);
                    cr_assert_eq(r.len, n, "iteration %d", iter);
                    cr_assert(n == 0 || memcmp(r.msg, want, n) == 0, "iteration %d", iter);
                } else if (st == SM_FRAME_ROOM) {
                    cr_assert(grow, "iteration %d: a buffer of max_frame never runs out", iter);
                    cr_assert_leq(r.need, r.len);
                    uint8_t *p = realloc(d.buf, r.need);
                    cr_assert_not_null(p);
                    sm_frame_decoder_set_buffer(&d, p, r.need);
                } else if (st < 0) {
                    break;
                }
            }
        }
        const uint8_t *want;
        uint32_t n;
        int next = reference_next(stream, len, &ref, max, &want, &n);
        cr_assert_neq(next, 1, "iteration %d: a message was missed", iter);
        cr_assert_eq(st < 0 ? st : 0, next, "iteration %d: ended with %d, want %d", iter, st, next);
        if (st >= 0)
            cr_assert_eq(sm_frame_decoder_in_frame(&d), ref < len, "iteration %d", iter);
        if (grow)
            free(d.buf);
    }
#undef RAND
}
