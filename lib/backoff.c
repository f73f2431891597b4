#include "backoff.h"

#include "sock.h"

#include <stdatomic.h>

/* Each backoff gets its own seed, so links that failed together do not
 * retry together. */
static atomic_uint_fast64_t seeds = 0x9e3779b97f4a7c15u;

void sm__backoff_init(sm_backoff *b, int min_ms, int max_ms)
{
    b->min_ms = min_ms > 0 ? min_ms : 100;
    b->max_ms = max_ms > 0 ? max_ms : 5000;
    if (b->max_ms < b->min_ms)
        b->max_ms = b->min_ms;
    b->next_ms = b->min_ms;
    b->seed = atomic_fetch_add(&seeds, 0x9e3779b97f4a7c15u) ^ (uint64_t)sm__now_ms();
}

/* xorshift64: plenty for spreading retries, and no global state. */
static uint64_t next_random(sm_backoff *b)
{
    uint64_t x = b->seed ? b->seed : 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return b->seed = x;
}

int sm__backoff_next(sm_backoff *b)
{
    int interval = b->next_ms;
    int half = interval / 2;
    int wait = half + (int)(next_random(b) % (uint64_t)(interval - half + 1));
    if (wait < 1)
        wait = 1;
    b->next_ms = interval > b->max_ms / 2 ? b->max_ms : interval * 2;
    return wait;
}

void sm__backoff_reset(sm_backoff *b)
{
    b->next_ms = b->min_ms;
}
