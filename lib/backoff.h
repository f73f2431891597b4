/* backoff - when to try again: exponential backoff with jitter, shared by
 * dialled server links, sm_connect_retry and smcat --retry. */
#ifndef SM_LIB_BACKOFF_H
#define SM_LIB_BACKOFF_H

#include <stdint.h>

typedef struct sm_backoff {
    int min_ms, max_ms; /* the interval's bounds */
    int next_ms;        /* the interval the next wait is drawn from */
    uint64_t seed;      /* jitter's state */
} sm_backoff;

/* Starts at min_ms (<= 0: 100) and grows to max_ms (<= 0: 5000). */
void sm__backoff_init(sm_backoff *b, int min_ms, int max_ms);

/* The next wait: uniform in [interval/2, interval], the first one too, so
 * links that dropped together do not retry together; the interval then
 * doubles, up to max_ms. */
int sm__backoff_next(sm_backoff *b);

/* A success: the next failure waits min_ms again. */
void sm__backoff_reset(sm_backoff *b);

#endif
