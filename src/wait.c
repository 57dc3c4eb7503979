/*
 * usock__wait: the one place a socket call parks its task until the fd is
 * ready, the deadline passes, the task is cancelled or the socket closed.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>

#include "internal.h"

/* The interest mask of s: derived from its two waiter slots. */
static int sock_mask(const struct usock *s)
{
    /* dir is the direction a waiter watches: its slot's own (0: the timer
     * only), or the other one for TLS (a write that needs input). */
    return (s->rwait ? s->rwait->dir : 0) | (s->wwait ? s->wwait->dir : 0);
}

/* Tell the reactor.  0, or -1 with errno (ENOMEM) when it could not
 * watch a wider mask (a narrower one never fails). */
static int update_mask(struct usock *s)
{
    struct usock__reactor *r = &s->hub->reactor;
    int mask = sock_mask(s);

    if (mask != s->io.events) {
        return r->ops->io_set(r, &s->io, s->fd, mask);
    }
    return 0;
}

/* Readiness of s (a reactor callback): wake its waiters. */
static void sock_ready(struct usock__io *io, int revents)
{
    struct usock *s = container_of(io, struct usock, io);

    /* A waiter with dir 0 only waits for its timer (accept back-off). */
    if (s->rwait && (revents & s->rwait->dir)) {
        usock__wake(s->rwait, 0);
    }
    if (s->wwait && (revents & s->wwait->dir)) {
        usock__wake(s->wwait, 0);
    }
}

/* Detach a socket wait record from its slot (the wait is over). */
static void sock_unlink(struct usock__wait *w)
{
    struct usock *s = w->owner;

    if (s->rwait == w) {
        s->rwait = NULL;
    } else if (s->wwait == w) {
        s->wwait = NULL;
    }
    (void)update_mask(s); /* narrowing: cannot fail */
}

/* A thread with no reactor (no tasks ever): one direct poll(2). */
static int wait_plain(struct usock *s, int dir, int64_t dl)
{
    struct pollfd p = {.fd = s->fd,
                       .events = dir == USOCK__IN ? POLLIN : POLLOUT};
    for (;;) {
        int r = poll(&p, 1, usock__ms_until(dl));
        if (r > 0) {
            return p.revents & POLLNVAL ? usock__fail(EBADF) : 0;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
        if (dl != USOCK__NEVER && usock__clock_ns() >= dl) {
            return usock__fail(ETIMEDOUT);
        }
    }
}

int usock__watch(struct usock *s, struct usock__wait *w, int dir, int events)
{
    struct usock_hub *h = usock__tls_hub;
    struct usock__wait **slot = dir == USOCK__IN ? &s->rwait : &s->wwait;

    if (*slot) {
        return usock__fail(EBUSY);
    }
    if (s->hub != h) {
        /* First wait on this hub (or the socket moved between threads):
         * the old hub's watcher is idle, since nobody waits there. */
        if (s->hub) {
            usock__hub_release(s->hub);
        }
        usock__hub_hold(h);
        /* Atomic: usock_close on another thread reads it (socket.c). */
        __atomic_store_n(&s->hub, h, __ATOMIC_RELEASE);
        s->io.cb = sock_ready;
        s->io.hot = &s->rwait;
        s->io.events = -1; /* unknown here: force the first io_set */
    }
    w->task = h->current;
    w->result = 0;
    w->unlink = sock_unlink;
    w->owner = s;
    w->dir = events;
    usock__heap_node_init(&w->timer);
    *slot = w;
    if (update_mask(s) < 0) {
        /* Not watched: waiting would never end. */
        *slot = NULL;
        return -1;
    }
    return 0;
}

/* Park on s's slot for `dir`; events 0 means "timer only". */
static int park_on(struct usock *s, int dir, int events, int64_t dl)
{
    struct usock__wait w = {0};

    if (usock__watch(s, &w, dir, events) < 0) {
        return -1;
    }
    int r = usock__park(usock__tls_hub, &w, dl);
    return r ? usock__fail(r) : 0;
}

/* What every wait of a call does first: compute the call's deadline once,
 * then refuse to wait when non-blocking or cancelled.  The hub, or NULL
 * with errno (EAGAIN, ECANCELED, ENOMEM). */
static struct usock_hub *wait_begin(struct usock *s, int64_t *dl)
{
    struct usock_hub *h;

    if (*dl == USOCK__DL_UNSET) {
        *dl = usock__deadline(s->timeout);
    }
    if (*dl == 0) {
        errno = EAGAIN;
        return NULL;
    }
    h = usock__hub_get();
    if (h && h->current->cancelled) {
        errno = ECANCELED;
        return NULL;
    }
    return h;
}

int usock__wait_for(struct usock *s, int slot, int events, int64_t *dl)
{
    struct usock_hub *h = wait_begin(s, dl);

    if (!h) {
        return -1;
    }
    if (!h->has_reactor) {
        return wait_plain(s, events, *dl);
    }
    return park_on(s, slot, events, *dl);
}

int usock__wait(struct usock *s, int dir, int64_t *dl)
{
    return usock__wait_for(s, dir, dir, dl);
}

int usock__backoff(struct usock *s, int dir, int64_t *dl, int64_t until)
{
    struct usock_hub *h = wait_begin(s, dl);

    if (!h) {
        return -1;
    }
    int last = *dl <= until;
    int64_t end = last ? *dl : until;
    if (!h->has_reactor) {
        /* No other task to run: a plain sleep (fds may be exhausted, so
         * do not make a reactor now). */
        usock__sleep_until(end);
        return last ? usock__fail(ETIMEDOUT) : 0;
    }
    /* Only the timer ends this wait with ETIMEDOUT; close and cancel end
     * it with their own errno. */
    if (park_on(s, dir, 0, end) < 0 && (errno != ETIMEDOUT || last)) {
        return -1;
    }
    return 0;
}
