#include "timer.h"

#include <stdlib.h>

static void swap(sm_timer *a, sm_timer *b)
{
    sm_timer x = *a;
    *a = *b;
    *b = x;
}

static void sift_up(sm_timer *h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2].due > h[i].due) {
        swap(&h[(i - 1) / 2], &h[i]);
        i = (i - 1) / 2;
    }
}

static void sift_down(sm_timer *h, size_t len, size_t i)
{
    for (;;) {
        size_t least = i, l = 2 * i + 1, r = l + 1;
        if (l < len && h[l].due < h[least].due)
            least = l;
        if (r < len && h[r].due < h[least].due)
            least = r;
        if (least == i)
            return;
        swap(&h[i], &h[least]);
        i = least;
    }
}

int sm__timers_add(sm_timers *t, const sm_timer *timer)
{
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        sm_timer *h = realloc(t->heap, cap * sizeof *h);
        if (!h)
            return SM_ENOMEM;
        t->heap = h;
        t->cap = cap;
    }
    t->heap[t->len] = *timer;
    sift_up(t->heap, t->len++);
    return 0;
}

/* Takes entry i out, keeping the heap ordered. */
static void remove_at(sm_timers *t, size_t i)
{
    t->heap[i] = t->heap[--t->len];
    if (i < t->len) {
        sift_down(t->heap, t->len, i);
        sift_up(t->heap, i);
    }
}

/* A linear search: cancelling is rare next to firing. */
int sm__timers_cancel(sm_timers *t, uint64_t id)
{
    for (size_t i = 0; i < t->len; i++) {
        if (t->heap[i].id == id) {
            remove_at(t, i);
            return 0;
        }
    }
    return SM_ENOCONN;
}

int64_t sm__timers_next(const sm_timers *t)
{
    return t->len ? t->heap[0].due : INT64_MAX;
}

int sm__timers_pop_due(sm_timers *t, int64_t now, sm_timer *out)
{
    if (!t->len || t->heap[0].due > now)
        return 0;
    *out = t->heap[0];
    remove_at(t, 0);
    return 1;
}

void sm__timers_free(sm_timers *t)
{
    free(t->heap);
    t->heap = NULL;
    t->len = t->cap = 0;
}
