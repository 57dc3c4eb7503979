/*
 * usock_poll: wait on many sockets at once (MicroPython's uselect.poll).
 *
 * The calling task holds, for the duration of the wait, the read slot of
 * every socket it polls for POLLIN and the write slot of every socket it
 * polls for POLLOUT: one sub-wait record per slot.  A master record carries
 * the timer and is what cancel wakes; a readiness event wakes a sub-record,
 * which queues the task.  Sub-records live on the stack for small sets.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define POLL_STACK 16

struct poll_wait {
    struct usock__wait master;
    struct usock__wait *subs; /* two per entry: read, write */
    size_t n;
};

/* Fill revents from poll(2) with no wait (plus buffered bytes as POLLIN);
 * entries in `gone` (closed while we waited) get POLLNVAL.  The count of
 * entries with revents, or -1 with errno. */
static int scan(struct usock_pollfd *fds, size_t n, const unsigned char *gone)
{
    struct pollfd small[POLL_STACK];
    struct pollfd *p =
        n <= POLL_STACK ? small : usock__calloc(n, sizeof(*p));
    int count = 0, r;

    if (!p) {
        return usock__fail(ENOMEM);
    }
    for (size_t i = 0; i < n; i++) {
        int live = fds[i].sock && !(gone && gone[i]);
        p[i].fd = live ? fds[i].sock->fd : -1;
        p[i].events = fds[i].events;
        p[i].revents = 0;
    }
    while ((r = poll(p, n, 0)) < 0 && errno == EINTR) {
    }
    if (r < 0) {
        /* EINVAL (more entries than RLIMIT_NOFILE), ENOMEM: an error,
         * not "nothing ready". */
        int e = errno;
        if (p != small) {
            free(p);
        }
        return usock__fail(e);
    }
    for (size_t i = 0; i < n; i++) {
        fds[i].revents = p[i].revents;
        if (gone && gone[i]) {
            fds[i].revents = POLLNVAL;
        } else if (fds[i].sock && usock__has_input(fds[i].sock) &&
                   (fds[i].events & POLLIN)) {
            fds[i].revents |= POLLIN;
        }
        count += fds[i].revents != 0;
    }
    if (p != small) {
        free(p);
    }
    return count;
}

/* Take every sub-record still linked out of its socket's slot. */
static void unwatch_all(struct poll_wait *pw)
{
    for (size_t i = 0; i < 2 * pw->n; i++) {
        struct usock__wait *w = &pw->subs[i];
        if (w->unlink) {
            w->unlink(w);
            w->unlink = NULL;
        }
    }
}

static void master_unlink(struct usock__wait *w)
{
    unwatch_all(container_of(w, struct poll_wait, master));
}

/* Register a sub-record per direction asked.  0, or -1 with errno. */
static int watch_all(struct poll_wait *pw, struct usock_pollfd *fds)
{
    for (size_t i = 0; i < pw->n; i++) {
        usock_t *s = fds[i].sock;
        if (s && (fds[i].events & POLLIN) &&
            usock__watch(s, &pw->subs[2 * i], USOCK__IN, USOCK__IN) < 0) {
            return -1;
        }
        if (s && (fds[i].events & POLLOUT) &&
            usock__watch(s, &pw->subs[2 * i + 1], USOCK__OUT, USOCK__OUT) <
                0) {
            return -1;
        }
    }
    return 0;
}

/* Park until one sub-record or the timer fires.  0 when woken, or -1 with
 * errno (ETIMEDOUT when the timer fired).  gone[i] is set for sockets closed meanwhile. */
static int park_many(struct usock_hub *h, struct poll_wait *pw,
                     struct usock_pollfd *fds, int64_t dl,
                     unsigned char *gone)
{
    int r = -1;

    if (watch_all(pw, fds) == 0) {
        pw->master.unlink = master_unlink;
        r = usock__park(h, &pw->master, dl);
        if (h->current->wait == &pw->master) {
            /* A sub-record woke us: end the master's wait too. */
            usock__heap_remove(&h->timers, &pw->master.timer);
            h->current->wait = NULL;
        }
        r = r == 0 ? 0 : usock__fail(r);
    }
    for (size_t i = 0; i < 2 * pw->n; i++) {
        gone[i / 2] |= pw->subs[i].task && pw->subs[i].result == EBADF;
    }
    unwatch_all(pw);
    return r;
}

/* A thread with no reactor: one direct poll(2) with the deadline. */
static int poll_plain(struct usock_pollfd *fds, size_t n, int64_t dl)
{
    struct pollfd *p = usock__calloc(n ? n : 1, sizeof(*p));
    int r;

    if (!p) {
        return usock__fail(ENOMEM);
    }
    for (size_t i = 0; i < n; i++) {
        p[i].fd = fds[i].sock ? fds[i].sock->fd : -1;
        p[i].events = fds[i].events;
    }
    do {
        r = poll(p, n, usock__ms_until(dl));
    } while ((r < 0 && errno == EINTR) ||
             (r == 0 && dl != USOCK__NEVER && usock__clock_ns() < dl));
    free(p);
    return r < 0 ? -1 : 0;
}

int usock_poll(struct usock_pollfd *fds, size_t n, double timeout)
{
    struct usock__wait small[2 * POLL_STACK];
    unsigned char gone_small[POLL_STACK];
    struct poll_wait pw = {.n = n};
    int64_t ns = usock__seconds_to_ns(timeout);
    struct usock_hub *h;
    int r;

    if ((!fds && n) || ns == -1 || n > 1u << 20) {
        return usock__fail(EINVAL);
    }
    r = scan(fds, n, NULL);
    if (r != 0 || ns == 0) {
        return r;
    }
    h = usock__hub_get();
    if (!h) {
        return -1;
    }
    if (h->current->cancelled) {
        return usock__fail(ECANCELED);
    }
    int64_t dl = usock__deadline(ns == -2 ? -1 : ns);
    int64_t own = ns == -2 ? USOCK__NEVER : usock__clock_ns() + ns;
    if (dl < own - 1000000) {
        own = -1; /* the task deadline comes first: ETIMEDOUT */
    } else {
        own = dl;
    }
    if (!h->has_reactor) {
        if (poll_plain(fds, n, dl) < 0) {
            return -1;
        }
        r = scan(fds, n, NULL);
        return r == 0 && own == -1 ? usock__fail(ETIMEDOUT) : r;
    }
    int big = n > POLL_STACK;
    pw.subs = big ? usock__calloc(2 * n, sizeof(*pw.subs)) : small;
    unsigned char *gone = big ? usock__calloc(n, 1) : gone_small;
    if (!pw.subs || !gone) {
        r = usock__fail(ENOMEM);
        goto out;
    }
    if (!big) {
        memset(small, 0, sizeof(small));
        memset(gone_small, 0, sizeof(gone_small));
    }
    r = park_many(h, &pw, fds, dl, gone);
    if (r == 0 || (errno == ETIMEDOUT && dl == own)) {
        r = scan(fds, n, gone); /* our own timeout is not an error */
    }
out:
    if (big) {
        free(pw.subs);
        free(gone);
    }
    return r;
}
