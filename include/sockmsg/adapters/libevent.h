/*
 * sockmsg/adapters/libevent.h - serve an sm_server from a libevent loop.
 *
 * Header-only: every function is static inline, so libsockmsg itself
 * never depends on libevent; a program that includes this header links
 * both (cc app.c $(pkg-config --cflags --libs sockmsg libevent_core)).
 *
 * The adapter watches sm_server_fd with a persistent read event
 * (EV_READ | EV_PERSIST) and keeps a timer event armed for
 * sm_server_timeout; on either it calls sm_server_run_once(s, 0), which
 * never waits.  So the server's clients, timers (sm_server_timer), idle
 * and stall timeouts and sm_server_call all run on the loop's thread,
 * between your own callbacks.
 *
 *     struct event_base *base = event_base_new();
 *     sm_event_adapter *a;
 *     sm_event_attach(server, base, &a);
 *     event_base_dispatch(base);       // until sm_server_stop and your events are done
 *     sm_event_detach(a);
 *     event_base_free(base);
 *     sm_server_free(server);
 *
 * Threads: as for the server, the loop's thread is the server's loop
 * thread; call these functions from it (sm_server_stop, sm_server_post and
 * sm_server_call stay safe from any thread: they wake the loop).
 */
#ifndef SOCKMSG_ADAPTERS_LIBEVENT_H
#define SOCKMSG_ADAPTERS_LIBEVENT_H

#include <errno.h>
#include <event2/event.h>
#include <sockmsg/sockmsg.h>
#include <stdlib.h>
#include <sys/time.h>

/* One server attached to one event base.  The members are the adapter's
 * own: read them through the functions below. */
typedef struct sm_event_adapter {
    sm_server *server;
    struct event *read;  /* sm_server_fd, EV_READ | EV_PERSIST */
    struct event *timer; /* sm_server_timeout */
    int status;          /* 0 while serving, else why the adapter stopped */
    int in_turn;         /* inside sm_server_run_once */
    int detached;        /* sm_event_detach was called during the turn */
} sm_event_adapter;

/* ---- internals (the callbacks libevent calls) ---- */

/* Arms the timer for ms from now (0: the loop's next turn). */
static inline void sm_event_arm(sm_event_adapter *a, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(a->timer, &tv);
}

/* Does the server's ready work, then waits for its next deadline. */
static inline void sm_event_turn(sm_event_adapter *a)
{
    a->in_turn = 1;
    int rc = sm_server_run_once(a->server, 0);
    a->in_turn = 0;
    if (a->detached) { /* by a server callback: the events are gone */
        free(a);
        return;
    }
    if (rc < 0) { /* SM_ESTOPPED, or waiting for events failed */
        a->status = rc;
        event_del(a->read); /* nothing keeps the loop alive for us now */
        evtimer_del(a->timer);
        return;
    }
    int ms = sm_server_timeout(a->server);
    if (ms >= 0)
        sm_event_arm(a, ms);
    else
        evtimer_del(a->timer);
}

static inline void sm_event_on_ready(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sm_event_turn((sm_event_adapter *)arg);
}

/* ---- the API ---- */

/*
 * sm_event_attach - serve s from base: from now on the loop runs the
 * server whenever it has work, starting with the loop's next turn.
 *
 * s stays yours: free it only after sm_event_detach.  The adapter (*out)
 * is the caller's to detach, and valid until then.  Its events keep
 * event_base_dispatch running while it serves.  Once the server stops
 * (sm_server_stop, from anywhere, a signal handler included) or waiting
 * for its events fails, the adapter removes its events, so the dispatch
 * can return when your own events are done; sm_event_status says why.
 * One adapter per server.
 *
 * Returns 0, or SM_EINVAL (a NULL argument), SM_ENOMEM, or -errno when
 * libevent cannot watch the descriptor.  On failure *out is NULL and
 * nothing stays attached.
 */
static inline int sm_event_attach(sm_server *s, struct event_base *base, sm_event_adapter **out)
{
    if (!out)
        return SM_EINVAL;
    *out = NULL;
    if (!s || !base)
        return SM_EINVAL;
    sm_event_adapter *a = (sm_event_adapter *)calloc(1, sizeof *a);
    if (!a)
        return SM_ENOMEM;
    a->server = s;
    a->read = event_new(base, sm_server_fd(s), EV_READ | EV_PERSIST, sm_event_on_ready, a);
    a->timer = evtimer_new(base, sm_event_on_ready, a);
    int rc = a->read && a->timer ? 0 : SM_ENOMEM;
    errno = 0;
    if (rc == 0 && event_add(a->read, NULL) < 0)
        rc = errno ? -errno : SM_EINVAL;
    if (rc == 0) /* a first turn at once: work queued before the attach gets done */
        sm_event_arm(a, 0);
    if (rc < 0) {
        if (a->read)
            event_free(a->read);
        if (a->timer)
            event_free(a->timer);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

/*
 * sm_event_detach - stop serving, free the adapter's events and the
 * adapter (NULL is ignored).  The server is not touched again and may be
 * freed right after (outside its own handlers), or attached anew.  Safe
 * from any callback on the loop's thread, the server's handlers included
 * (the adapter is then freed as the server's turn ends).
 */
static inline void sm_event_detach(sm_event_adapter *a)
{
    if (!a || a->detached)
        return;
    event_free(a->read);
    event_free(a->timer);
    a->read = a->timer = NULL;
    if (a->in_turn)
        a->detached = 1; /* sm_event_turn frees it */
    else
        free(a);
}

/*
 * sm_event_update - tell the adapter the server has work it cannot see:
 * you set a timer (sm_server_timer) or queued a message (sm_server_send,
 * sm_server_broadcast, sm_server_disconnect) from one of your own
 * libevent callbacks rather than from a server handler.  The server then
 * runs on the loop's next turn.  Not needed inside the server's handlers:
 * the adapter looks again after every run.  Returns
 * sm_event_status(a), or SM_EINVAL for NULL.
 */
static inline int sm_event_update(sm_event_adapter *a)
{
    if (!a)
        return SM_EINVAL;
    if (a->status == 0 && !a->detached)
        sm_event_arm(a, 0);
    return a->status;
}

/*
 * sm_event_status - 0 while the adapter serves; SM_ESTOPPED once the
 * server stopped (sm_server_stop: every connection was closed, as at the
 * end of sm_server_run); else the error from sm_server_run_once that
 * stopped it.  SM_EINVAL for NULL.  After a stop the server may serve
 * again: detach this adapter and attach a new one.
 */
static inline int sm_event_status(const sm_event_adapter *a)
{
    return a ? a->status : SM_EINVAL;
}

#endif
