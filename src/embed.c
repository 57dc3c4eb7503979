/*
 * Embedding the hub in a daemon's event loop.
 *
 * A libev loop (usock_hub_use_ev_loop): the ev reactor runs on the
 * daemon's loop and calls the hub from it.
 *
 *   daemon's ev_run ──ev_prepare──▶ usock__embed_tick: due timers, posts,
 *                                   one round of ready tasks, then the
 *                                   reactor's wake-up timer is armed
 *   a blocking call of the daemon's own code ──▶ usock__embed_block: the
 *                                   daemon's loop, one iteration at a time
 *
 * Any other loop (glib, libuv, a poll(2) or select(2) loop), the pattern of
 * libuv's uv_backend_fd/uv_backend_timeout:
 *
 *   daemon's loop                          hub
 *   poll({usock_hub_fd(), its own fds},    the reactor's epoll set (and an
 *        usock_hub_timeout())  ──────────▶ eventfd for posts) in one fd
 *   usock_hub_run_nowait()  ─────────────▶ I/O, timers, posts; then every
 *                                          ready task, each coming back when
 *                                          it blocks (drive)
 *
 * The run queue, timers and switch are run.h's copies, as in hub.c: a
 * round of tasks here costs no more than one there.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <usocket.h>

#include "hub.h"
#include "internal.h"
#include "run.h"

/* ------------------------------------------------------------------------ */
/*  In a daemon's libev loop                                                */
/* ------------------------------------------------------------------------ */

/*
 * The daemon's ev_run calls usock__embed_tick once per iteration (from
 * an ev_prepare watcher, on the thread's own stack).  It fires due timers,
 * runs the inbox and one round of ready tasks, then arms the reactor's
 * wake-up timer for the earliest deadline.
 */
void usock__embed_tick(void *owner)
{
    struct usock_hub *h = owner;
    struct usock__task *t;
    size_t round = h->rq_len;

    if (h->current != &h->main) {
        return;
    }
    if (h->timers.n) {
        usock__fire_timers(h, usock__clock_ns());
    }
    usock__inbox_run(h);
    if (h->deferred) {
        usock__posts_retry(h, usock__clock_ns());
    }
    round = round > h->rq_len ? round : h->rq_len;
    while (round-- > 0 && (t = usock__rq_pop(h))) {
        if (t == &h->main) {
            h->main_woken = 1;
        } else {
            usock__switch_to(h, &h->main, t);
        }
    }
    struct usock__heap_node *n = usock__heap_top(&h->timers);
    int64_t next = h->rq_head ? 1 : n ? n->key : USOCK__NEVER;
    if (h->deferred && h->retry_at < next) {
        next = h->retry_at;
    }
    h->reactor.ops->timer_set(&h->reactor, next);
}

/* Embedded: the hub has work while tasks live or the thread's own context
 * waits in a blocking call. */
static int embed_busy(void *owner)
{
    struct usock_hub *h = owner;
    return h->ntasks > 0 || h->rq_head != NULL || h->main.wait != NULL ||
           h->deferred != NULL;
}

/* A blocking call made by the daemon's own code: run the daemon's loop one
 * iteration at a time until the call's wait is over. */
void usock__embed_block(struct usock_hub *h)
{
    h->main_woken = 0;
    for (;;) {
        usock__embed_tick(h);
        if (h->main_woken) {
            return;
        }
        h->reactor.ops->run_once(&h->reactor, USOCK__NEVER);
    }
}

int usock_hub_use_ev_loop(struct ev_loop *loop)
{
    const struct usock__reactor_ops *ops;
    struct usock_hub *h;

    if (!loop) {
        return usock__fail(EINVAL);
    }
    if (usock__tls_hub) {
        return usock__fail(EBUSY);
    }
    ops = usock__reactor_pick_ev();
    if (!ops) {
        return -1;
    }
    h = usock__hub_get();
    return h ? usock__hub_attach(h, ops, loop, usock__embed_tick, embed_busy)
             : -1;
}

/* ------------------------------------------------------------------------ */
/*  In any other loop                                                       */
/* ------------------------------------------------------------------------ */

/* From the thread's own context: take in ready I/O, due timers and posts
 * without blocking, run each task that is ready then (with h->driving set,
 * next_task sends each one back here when it blocks), and hand the reactor
 * the watches they set. */
static void drive(struct usock_hub *h)
{
    struct usock__task *t;
    size_t round;

    h->reactor.ops->run_once(&h->reactor, 0);
    h->last_poll = usock__clock_ns();
    if (h->timers.n) {
        usock__fire_timers(h, h->last_poll);
    }
    usock__inbox_run(h);
    round = h->rq_len;
    h->driving = 1;
    while (round-- > 0 && (t = usock__rq_pop(h))) {
        if (t != &h->main) {
            usock__switch_to(h, &h->main, t);
        }
    }
    h->driving = 0;
    if (h->reactor.dirty) {
        /* The backend hands watch changes to the kernel in a pass. */
        h->reactor.ops->run_once(&h->reactor, 0);
    }
}

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
    drive(h);
    return (int)h->ntasks;
}
