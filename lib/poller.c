#include "poller.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define BATCH 256

struct sm_poller {
    int epoll_fd;
    int wake_fd;
    struct epoll_event events[BATCH];
};

static uint32_t to_epoll(unsigned events)
{
    return (events & SM_POLL_IN ? EPOLLIN : 0u) | (events & SM_POLL_OUT ? EPOLLOUT : 0u) |
           (events & SM_POLL_HUP ? EPOLLRDHUP : 0u);
}

int sm__poller_new(sm_poller **out)
{
    sm_poller *p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    p->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int rc = p->epoll_fd < 0 || p->wake_fd < 0 ? -errno : 0;
    if (!rc)
        rc = sm__poller_add(p, p->wake_fd, SM_POLL_WAKE_KEY, SM_POLL_IN);
    if (rc) {
        sm__poller_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void sm__poller_free(sm_poller *p)
{
    if (!p)
        return;
    if (p->epoll_fd >= 0)
        close(p->epoll_fd);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    free(p);
}

static int control(sm_poller *p, int op, int fd, uint64_t key, unsigned events)
{
    struct epoll_event ev = { .events = to_epoll(events), .data.u64 = key };
    return epoll_ctl(p->epoll_fd, op, fd, &ev) < 0 ? -errno : 0;
}

int sm__poller_add(sm_poller *p, int fd, uint64_t key, unsigned events)
{
    return control(p, EPOLL_CTL_ADD, fd, key, events);
}

int sm__poller_mod(sm_poller *p, int fd, uint64_t key, unsigned events)
{
    return control(p, EPOLL_CTL_MOD, fd, key, events);
}

int sm__poller_del(sm_poller *p, int fd)
{
    return control(p, EPOLL_CTL_DEL, fd, 0, 0);
}

int sm__poller_wait(sm_poller *p, sm_poll_event *out, int max, int timeout_ms)
{
    if (max > BATCH)
        max = BATCH;
    int n = epoll_wait(p->epoll_fd, p->events, max, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = p->events[i].events;
        out[i].key = p->events[i].data.u64;
        out[i].events = (e & EPOLLIN ? SM_POLL_IN : 0u) | (e & EPOLLOUT ? SM_POLL_OUT : 0u) |
                        (e & EPOLLRDHUP ? SM_POLL_HUP : 0u) |
                        (e & (EPOLLERR | EPOLLHUP) ? SM_POLL_ERR : 0u);
        if (out[i].key == SM_POLL_WAKE_KEY) {
            uint64_t count;
            ssize_t r = read(p->wake_fd, &count, sizeof count);
            (void)r; /* EAGAIN only: another wait drained it first */
        }
    }
    return n;
}

int sm__poller_fd(const sm_poller *p)
{
    return p->epoll_fd;
}

void sm__poller_wake(sm_poller *p)
{
    uint64_t one = 1;
    /* write() is async-signal-safe; a full counter still wakes the loop. */
    ssize_t r = write(p->wake_fd, &one, sizeof one);
    (void)r;
}
