/* timer - the server's timers: a binary min-heap ordered by due time. */
#ifndef SM_LIB_TIMER_H
#define SM_LIB_TIMER_H

#include <sockmsg/sockmsg.h>

#include <stddef.h>
#include <stdint.h>

typedef struct sm_timer {
    int64_t due; /* CLOCK_MONOTONIC ms */
    uint64_t id;
    int repeat_ms; /* 0: once */
    sm_timer_fn *fn;
    void *arg;
} sm_timer;

typedef struct sm_timers {
    sm_timer *heap;
    size_t len, cap;
} sm_timers;

/* Adds t (its id set by the caller).  Returns 0 or SM_ENOMEM. */
int sm__timers_add(sm_timers *t, const sm_timer *timer);

/* Removes the timer with this id.  Returns 0 or SM_ENOCONN (no such timer). */
int sm__timers_cancel(sm_timers *t, uint64_t id);

/* The earliest due time, or INT64_MAX with no timers. */
int64_t sm__timers_next(const sm_timers *t);

/* Removes the earliest timer into *out if it is due at now: 1, else 0. */
int sm__timers_pop_due(sm_timers *t, int64_t now, sm_timer *out);

/* Frees the heap. */
void sm__timers_free(sm_timers *t);

#endif
