/*
 * sockmsg/adapters/libuv.h - serve an sm_server from a libuv loop.
 *
 * Header-only: every function is static inline, so libsockmsg itself
 * never depends on libuv; a program that includes this header links both
 * (cc app.c $(pkg-config --cflags --libs sockmsg libuv)).
 *
 * The adapter watches sm_server_fd for readability with a uv_poll_t and
 * keeps a uv_timer_t armed for sm_server_timeout; on either it calls
 * sm_server_run_once(s, 0), which never waits.  So the server's clients,
 * timers (sm_server_timer), idle and stall timeouts and sm_server_call
 * all run on the loop's thread, between your own callbacks.
 *
 *     uv_loop_t loop;
 *     sm_uv_adapter *a;
 *     uv_loop_init(&loop);
 *     sm_uv_attach(server, &loop, &a);
 *     uv_run(&loop, UV_RUN_DEFAULT);   // until sm_server_stop and your handles are done
 *     sm_uv_detach(a);
 *     uv_run(&loop, UV_RUN_DEFAULT);   // lets libuv finish closing the adapter
 *     uv_loop_close(&loop);
 *     sm_server_free(server);
 *
 * Threads: as for the server, the loop's thread is the server's loop
 * thread; call these functions from it (sm_server_stop, sm_server_post and
 * sm_server_call stay safe from any thread: they wake the loop).
 */
#ifndef SOCKMSG_ADAPTERS_LIBUV_H
#define SOCKMSG_ADAPTERS_LIBUV_H

#include <sockmsg/sockmsg.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

/* One server attached to one loop.  The members are the adapter's own:
 * read them through the functions below. */
typedef struct sm_uv_adapter {
    sm_server *server;
    uv_poll_t poll;   /* sm_server_fd, readable */
    uv_timer_t timer; /* sm_server_timeout */
    int status;       /* 0 while serving, else why the adapter stopped */
    int detached;     /* sm_uv_detach was called */
    int handles;      /* handles libuv has not finished closing */
} sm_uv_adapter;

/* ---- internals (the callbacks libuv calls) ---- */

static inline void sm_uv_on_timer(uv_timer_t *timer);

/* Stops watching: nothing keeps the loop alive for the server any more. */
static inline void sm_uv_halt(sm_uv_adapter *a, int status)
{
    a->status = status;
    uv_poll_stop(&a->poll);
    uv_timer_stop(&a->timer);
}

/* Does the server's ready work, then waits for its next deadline. */
static inline void sm_uv_turn(sm_uv_adapter *a)
{
    int rc = sm_server_run_once(a->server, 0);
    if (a->detached) /* by a server handler: closing already (freed later) */
        return;
    if (rc < 0) {
        sm_uv_halt(a, rc); /* SM_ESTOPPED, or waiting for events failed */
        return;
    }
    int ms = sm_server_timeout(a->server);
    if (ms >= 0)
        uv_timer_start(&a->timer, sm_uv_on_timer, (uint64_t)ms, 0);
    else
        uv_timer_stop(&a->timer);
}

static inline void sm_uv_on_poll(uv_poll_t *poll, int status, int events)
{
    sm_uv_adapter *a = (sm_uv_adapter *)poll->data;
    (void)events;
    if (status < 0)
        sm_uv_halt(a, status); /* libuv cannot poll the descriptor */
    else
        sm_uv_turn(a);
}

static inline void sm_uv_on_timer(uv_timer_t *timer)
{
    sm_uv_turn((sm_uv_adapter *)timer->data);
}

/* The adapter's memory goes once libuv has closed both handles. */
static inline void sm_uv_on_close(uv_handle_t *handle)
{
    sm_uv_adapter *a = (sm_uv_adapter *)handle->data;
    if (--a->handles == 0)
        free(a);
}

/* ---- the API ---- */

/*
 * sm_uv_attach - serve s from loop: from now on the loop runs the server
 * whenever it has work, starting with the loop's next turn.
 *
 * s stays yours: free it only after sm_uv_detach.  The adapter (*out) is
 * the caller's to detach, and valid until then.  It keeps the loop alive
 * (uv_run does not return) while it serves.  Once the server stops
 * (sm_server_stop, from anywhere, a signal handler included) or waiting
 * for its events fails, the adapter stops watching, so uv_run can return
 * when your own handles are done; sm_uv_status says why.  One adapter per
 * server.
 *
 * Returns 0, or SM_EINVAL (a NULL argument), SM_ENOMEM, or libuv's error
 * for the descriptor (negative errno values on Unix, as the library's:
 * uv_strerror or sm_strerror names them; UV_EEXIST: already attached to
 * this loop).  On failure *out is NULL and nothing stays attached (a
 * handle already made is closed, and freed by the loop's next turn).
 */
static inline int sm_uv_attach(sm_server *s, uv_loop_t *loop, sm_uv_adapter **out)
{
    if (!out)
        return SM_EINVAL;
    *out = NULL;
    if (!s || !loop)
        return SM_EINVAL;
    sm_uv_adapter *a = (sm_uv_adapter *)calloc(1, sizeof *a);
    if (!a)
        return SM_ENOMEM;
    a->server = s;
    int rc = uv_poll_init(loop, &a->poll, sm_server_fd(s));
    if (rc < 0) {
        free(a); /* a failed init leaves nothing behind in the loop */
        return rc;
    }
    a->poll.data = a;
    a->handles = 1;
    rc = uv_timer_init(loop, &a->timer);
    if (rc == 0) {
        a->timer.data = a;
        a->handles = 2;
        rc = uv_poll_start(&a->poll, UV_READABLE, sm_uv_on_poll);
    }
    /* A first turn at once: work queued before the attach gets done. */
    if (rc == 0)
        rc = uv_timer_start(&a->timer, sm_uv_on_timer, 0, 0);
    if (rc < 0) {
        a->detached = 1;
        uv_close((uv_handle_t *)&a->poll, sm_uv_on_close);
        if (a->handles == 2)
            uv_close((uv_handle_t *)&a->timer, sm_uv_on_close);
        return rc; /* freed as the loop closes the handles */
    }
    *out = a;
    return 0;
}

/*
 * sm_uv_detach - stop serving and close the adapter's handles (NULL is
 * ignored).  The server is not touched again and may be freed right
 * after, or attached anew; the adapter's own memory is freed by libuv's
 * close callbacks, so run the loop once more (uv_run) before
 * uv_loop_close.  Safe from any callback on the loop's thread, the
 * server's handlers included.
 */
static inline void sm_uv_detach(sm_uv_adapter *a)
{
    if (!a || a->detached)
        return;
    a->detached = 1;
    uv_close((uv_handle_t *)&a->poll, sm_uv_on_close);
    uv_close((uv_handle_t *)&a->timer, sm_uv_on_close);
}

/*
 * sm_uv_update - tell the adapter the server has work it cannot see: you
 * set a timer (sm_server_timer) or queued a message (sm_server_send,
 * sm_server_broadcast, sm_server_disconnect) from one of your own libuv
 * callbacks rather than from a server handler.  The server then runs on
 * the loop's next turn.  Not needed inside the server's handlers: the
 * adapter looks again after every run.  Returns sm_uv_status(a), or
 * SM_EINVAL for NULL.
 */
static inline int sm_uv_update(sm_uv_adapter *a)
{
    if (!a)
        return SM_EINVAL;
    if (a->status == 0 && !a->detached)
        uv_timer_start(&a->timer, sm_uv_on_timer, 0, 0);
    return a->status;
}

/*
 * sm_uv_status - 0 while the adapter serves; SM_ESTOPPED once the server
 * stopped (sm_server_stop: every connection was closed, as at the end of
 * sm_server_run); else the error that stopped it (from
 * sm_server_run_once, or libuv's for the descriptor).  SM_EINVAL for
 * NULL.  After a stop the server may serve again: detach this adapter and
 * attach a new one.
 */
static inline int sm_uv_status(const sm_uv_adapter *a)
{
    return a ? a->status : SM_EINVAL;
}

#endif
