/*
 * Embedding the hub in a loop that is not libev (glib, libuv, a poll(2) or
 * select(2) loop), the pattern of libuv's uv_backend_fd/uv_backend_timeout:
 *
 *   daemon's loop                          hub
 *   poll({usock_hub_fd(), its own fds},    the reactor's epoll set (and an
 *        usock_hub_timeout())  ──────────▶ eventfd for posts) in one fd
 *   usock_hub_run_nowait()  ─────────────▶ I/O, timers, posts; then every
 *                                          ready task, each coming back when
 *                                          it blocks (usock__hub_drive)
 *
 * Embedding in a daemon's libev loop (usock_hub_use_ev_loop) lives in hub.c.
 */
#include "config.h"

#include <errno.h>

#include <usocket.h>

#include "hub.h"
#include "internal.h"

/* This thread's hub, with a reactor that can give a wait fd.  NULL with
 * errno ENOTSUP (poll reactor), EBUSY (the hub runs in a daemon's libev
 * loop), ENOMEM ... */
static struct usock_hub *driven(void)
{
    struct usock_hub *h = usock__hub_get();

    if (!h || usock__hub_reactor(h) < 0) {
        return NULL;
    }
    if (h->embedded) {
        errno = EBUSY;
        return NULL;
    }
    if (h->reactor.ops->wait_fd == NULL) {
        errno = ENOTSUP;
        return NULL;
    }
    return h;
}

int usock_hub_fd(void)
{
    struct usock_hub *h = driven();

    return h ? h->reactor.ops->wait_fd(&h->reactor) : -1;
}

double usock_hub_timeout(void)
{
    struct usock_hub *h = driven();
    struct usock__heap_node *n;
    int64_t left, us;

    if (!h) {
        return USOCK_NONE;
    }
    if (h->rq_head || h->reactor.dirty ||
        __atomic_load_n(&h->inbox, __ATOMIC_ACQUIRE)) {
        return 0.;
    }
    if ((n = usock__heap_top(&h->timers)) == NULL) {
        return USOCK_NONE;
    }
    /* Rounded up to the microsecond: never a wake-up before the deadline. */
    left = n->key - usock__clock_ns();
    if (left <= 0) {
        return 0.;
    }
    us = left / 1000 + (left % 1000 != 0);
    return (double)us / 1e6;
}

int usock_hub_run_nowait(void)
{
    struct usock_hub *h = driven();

    if (!h) {
        return -1;
    }
    if (h->current != &h->main) {
        return usock__fail(EDEADLK);
    }
    usock__hub_drive(h);
    return (int)h->ntasks;
}
