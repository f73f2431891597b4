/* Bytes for the tests: frame headers, patterns, payloads and seeded
 * garbage with the verdict a receiver must reach on it. */
#include "support.h"

#include <sockmsg/frame.h>

#include <stdlib.h>
#include <string.h>

/* The public codec's own header functions, so the tests frame exactly as
 * the library and the ready-made peers do. */
void put32(uint8_t *p, uint32_t v)
{
    sm_frame_header_put(p, v);
}

uint32_t get32(const uint8_t *p)
{
    return sm_frame_header_get(p);
}

uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

uint8_t pattern_byte(size_t i, unsigned seed)
{
    uint32_t x = (uint32_t)i * 2654435761u + (seed + 1u) * 2246822519u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    return (uint8_t)x;
}

void pattern_fill(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_byte(i, seed);
}

size_t pattern_check(const uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern_byte(i, seed))
            return i;
    return len;
}

uint8_t *patterned(size_t len, unsigned seed)
{
    uint8_t *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    pattern_fill(p, len, seed);
    return p;
}

uint8_t *filled(size_t len, int byte)
{
    uint8_t *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    memset(p, byte, len);
    return p;
}

size_t make_payload(uint8_t *buf, int client, int round)
{
    int n = snprintf((char *)buf, 64, "client %d round %d|", client, round);
    size_t len = (size_t)n + (size_t)((client * 37 + round * 101) % 700);
    for (size_t k = (size_t)n; k < len; k++)
        buf[k] = (uint8_t)(client * 7 + round * 13 + (int)k);
    return len;
}

static uint32_t garbage_frame_len(const struct garbage_shape *g, uint64_t *x)
{
    uint32_t len = (uint32_t)(xorshift(x) % g->frame_spread);
    if (xorshift(x) % g->rare_every == 0)
        len = g->rare_base + (uint32_t)(xorshift(x) % g->rare_spread);
    return len;
}

static uint8_t garbage_byte(const struct garbage_shape *g, uint64_t *x)
{
    return g->letters ? (uint8_t)('a' + xorshift(x) % 26) : (uint8_t)xorshift(x);
}

size_t make_garbage(uint8_t *buf, size_t cap, unsigned seed, const struct garbage_shape *g)
{
    uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
    size_t n = g->min_len + (size_t)(xorshift(&x) % g->len_spread);
    cr_assert_leq(n, cap, "a garbage shape longer than its buffer");
    if (seed % 2 == 0) {
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)xorshift(&x);
        return n;
    }
    int forced = g->forced_every && seed % g->forced_every == 0;
    size_t i = 0;
    while (i < n) {
        uint32_t len = garbage_frame_len(g, &x);
        if (forced && i > n / 2) {
            len = g->max_frame + 1 + (uint32_t)(xorshift(&x) % 0x7fffffffu);
            forced = 0;
        }
        uint8_t h[4];
        put32(h, len);
        for (int k = 0; k < 4 && i < n; k++)
            buf[i++] = h[k];
        for (uint32_t k = 0; k < len && i < n; k++)
            buf[i++] = garbage_byte(g, &x);
    }
    return n;
}

int garbage_verdict(const uint8_t *p, size_t n, uint32_t max_frame, int *messages, size_t *whole)
{
    size_t i = 0;
    *messages = 0;
    if (whole)
        *whole = 0;
    while (i < n) {
        if (n - i < 4)
            return SM_ETRUNCATED;
        uint32_t len = get32(p + i);
        if (len > max_frame)
            return SM_ETOOBIG;
        if (n - i - 4 < len)
            return SM_ETRUNCATED;
        i += 4 + len;
        (*messages)++;
        if (whole)
            *whole = i;
    }
    return SM_ECLOSED;
}
