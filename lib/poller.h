/*
 * poller - readiness notification behind one small interface, so the
 * server does not care which OS mechanism is underneath (epoll here; a
 * poll() or kqueue version would replace poller.c alone).
 */
#ifndef SM_LIB_POLLER_H
#define SM_LIB_POLLER_H

#include <stdint.h>

#define SM_POLL_IN 1u
#define SM_POLL_OUT 2u
#define SM_POLL_ERR 4u /* error or hang-up: a read or write tells which */
#define SM_POLL_HUP 8u /* the peer will send no more (asked for, like IN) */

/* The key reported when sm__poller_wake was called. */
#define SM_POLL_WAKE_KEY UINT64_MAX

typedef struct sm_poller sm_poller;

typedef struct sm_poll_event {
    uint64_t key;
    unsigned events;
} sm_poll_event;

int sm__poller_new(sm_poller **out); /* 0 or -errno */
void sm__poller_free(sm_poller *p);

/* Register, change or remove fd; key comes back in its events.
 * Return 0 or -errno. */
int sm__poller_add(sm_poller *p, int fd, uint64_t key, unsigned events);
int sm__poller_mod(sm_poller *p, int fd, uint64_t key, unsigned events);
int sm__poller_del(sm_poller *p, int fd);

/* Waits up to timeout_ms (-1: forever) and fills at most max events.
 * Returns their number (0 on timeout or EINTR) or -errno. */
int sm__poller_wait(sm_poller *p, sm_poll_event *out, int max, int timeout_ms);

/* The epoll descriptor, readable when an event waits (for a caller's
 * own loop). */
int sm__poller_fd(const sm_poller *p);

/* Makes a pending or the next sm__poller_wait return SM_POLL_WAKE_KEY.
 * Safe from any thread and from a signal handler. */
void sm__poller_wake(sm_poller *p);

#endif
