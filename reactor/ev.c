/*
 * The libev backend, the only file that includes <ev.h>.
 *
 * It runs on a loop of its own (standalone: the hub calls run_once) or on a
 * daemon's loop (foreign: the daemon calls ev_run, and an ev_prepare
 * watcher gives the hub its tick once per iteration).
 *
 * Each fd gets one persistent ev_io, started and stopped, never re-created.
 * libev keeps pointers to active watchers, so the entries are allocated one
 * by one and only the table of pointers to them grows:
 *
 *   fds:  [0] NULL | [1] NULL | ... | [7] ─▶ { ev_io io; w; mask; ... }
 *                                              io.data ─▶ struct state
 *
 * An entry outlives io_forget and is reused when its fd number comes back.
 *
 * libev (as packaged, with asserts on) aborts when epoll_ctl says EBADF.  So
 * the first start of an fd number is deferred to the prepare watcher, which
 * runs just before libev hands changes to the kernel: it checks that the fd
 * is open (one fcntl per fd number, not per wait), and a closed fd gets an
 * EV_ERROR callback instead, as poll(2) reports POLLNVAL.  An fd that was
 * started once and then closed without io_forget breaks the contract; libev
 * may abort on it.
 *
 * For a loop that is not libev (wait_fd, usock_hub_fd) the loop's epoll fd
 * is put in an epoll set of our own, with an eventfd that wakeup() writes:
 * libev's ev_async only writes its pipe while ev_run is blocked in the
 * kernel, which never happens while another loop waits for us.  The outer
 * set keeps one fd number even when libev makes its backend fd anew (after
 * a fork, or when it finds the kernel's set out of step: an ev_fork
 * watcher tells us).  libev has no call that returns its backend fd, but
 * ev_embed_start puts it in the ev_io of an ev_embed (ev.h shows that
 * member): a watcher started on a throw-away select(2) loop reads it.
 *
 * On a foreign loop the internal watchers (async, prepare, alarm, soon) are
 * ev_unref'd after they start and ev_ref'd before they stop, so they never
 * keep the daemon's ev_run alive by themselves.  On our own loop they stay
 * referenced, or ev_run(EVRUN_ONCE) would not block.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "reactor.h"

#define MIN_FDS 1024

/* 64-byte aligned: what on_io and io_set read fills the first cache line
 * (ev_io is 48 bytes on LP64). */
struct entry {
    ev_io io;            /* first member: on_io casts back to the entry */
    struct usock__io *w; /* the watcher, NULL when none */
    unsigned gen;        /* the file behind fd: usock__io.gen */
    unsigned char mask;  /* USOCK__ mask wanted (io may be armed for more
                            until its next event: a lazy disarm) */
    unsigned char open;  /* the fd was checked open since io_forget */
    unsigned char queued; /* on the list */
    struct entry *next;  /* on the list of entries to check and start */
};
_Static_assert(offsetof(struct entry, queued) < 64,
               "on_io and io_set read one cache line of an entry");

struct state {
    struct ev_loop *loop;
    struct usock__reactor *r;
    int foreign;        /* the loop is the daemon's: never destroyed */
    struct entry **fds; /* fd -> entry, NULL when never used */
    size_t nfds;
    ev_async wake;       /* wakeup(): thread-safe */
    ev_timer until;      /* run_once's deadline */
    ev_timer alarm;      /* timer_set() on a foreign loop */
    ev_idle soon;        /* timer_set() with a deadline already past */
    ev_prepare prep;     /* hooks.tick on a foreign loop; starts */
    struct entry *fresh; /* entries to check and start before waiting */
    int held;            /* we hold a reference: the hub is busy */
    int calls;           /* callbacks made since run_once started */
    int woken;           /* wakeup() seen since run_once started */
    /* Inside run_once, on_io only notes what fired (and starts fetching
     * each watcher's memory); run_once then makes the callbacks, so a
     * batch of events does not wait for memory one callback at a time. */
    int deferring;
    struct fired {
        struct entry *e;
        unsigned gen; /* e's file when it fired */
        int ev;
    } *fired;
    size_t nfired, capfired;
    /* wait_fd: the outer epoll set (-1 until asked for), the backend fd
     * it holds, and the eventfd wakeup() writes (-1 until then; atomic),
     * with `kicked` set while a write is not yet read (atomic). */
    int outer, inner, kick, kicked;
    ev_fork reborn;      /* libev makes its backend fd anew */
    int renew;           /* reborn fired: find the backend fd again */
};

/* Called after an internal watcher starts and before it stops. */
static void unref_started(struct state *s)
{
    if (s->foreign) {
        ev_unref(s->loop);
    }
}

static void ref_stopping(struct state *s)
{
    if (s->foreign) {
        ev_ref(s->loop);
    }
}

/* libev revents as USOCK__ bits.  EV_ERROR means libev found the fd
 * invalid and stopped the watcher. */
static int to_usock(int revents)
{
    if (revents & EV_ERROR) {
        return USOCK__IN | USOCK__OUT | USOCK__ERR;
    }
    return ((revents & EV_READ) ? USOCK__IN : 0) |
           ((revents & EV_WRITE) ? USOCK__OUT : 0);
}

static int to_ev(int events)
{
    return ((events & USOCK__IN) ? EV_READ : 0) |
           ((events & USOCK__OUT) ? EV_WRITE : 0);
}

/* Make e's callback; the hub may prefetch e for the woken task. */
static void call(struct state *s, struct entry *e, int ev)
{
    s->calls++;
    s->r->hint = e;
    e->w->cb(e->w, ev);
    s->r->hint = NULL;
}

static int grow_fired(struct state *s)
{
    size_t n = s->capfired ? s->capfired * 2 : 64;
    struct fired *f = usock__realloc(s->fired, n * sizeof(*f));

    if (f == NULL) {
        return -1; /* on_io makes the callback at once instead */
    }
    s->fired = f;
    s->capfired = n;
    return 0;
}

/* The callbacks on_io put off, in the order the events came. */
static void call_fired(struct state *s)
{
    for (size_t i = 0; i < s->nfired; i++) {
        struct entry *e = s->fired[i].e;
        if (i + 2 < s->nfired) {
            /* on_io fetched that watcher: now what its callback reads. */
            const struct usock__io *w = s->fired[i + 2].e->w;
            if (w != NULL && w->hot != NULL) {
                const void *p;
                memcpy(&p, w->hot, sizeof(p));
                __builtin_prefetch(p);
            }
        }
        /* A callback made before this one may have forgotten this fd or
         * even put another file under its number: then no callback. */
        if (e->w != NULL && e->gen == s->fired[i].gen) {
            call(s, e, s->fired[i].ev);
        }
    }
    s->nfired = 0;
}

static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct entry *e = (struct entry *)io;
    struct state *s = io->data;
    int ev = to_usock(revents);

    if (revents & EV_ERROR) {
        e->open = 0; /* libev stopped io: check the fd again at restart. */
    } else if ((io->events & (EV_READ | EV_WRITE)) != to_ev(e->mask)) {
        /* Armed for more than is wanted now (a lazy disarm): narrow it. */
        ev_io_stop(loop, io);
        if (e->mask != 0) {
            ev_io_modify(io, to_ev(e->mask));
            ev_io_start(loop, io);
        }
        s->r->dirty = 1; /* libev tells epoll in its next pass */
    }
    if (e->w == NULL || ev == 0) {
        return;
    }
    if (s->deferring && (s->nfired < s->capfired || grow_fired(s) == 0)) {
        __builtin_prefetch(e->w);
        s->fired[s->nfired].e = e;
        s->fired[s->nfired].gen = e->gen;
        s->fired[s->nfired].ev = ev;
        s->nfired++;
        return;
    }
    call(s, e, ev);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct state *s = a->data;

    s->woken = 1;
}

static void on_until(struct ev_loop *loop, ev_timer *t, int revents)
{
    /* Nothing to do: the iteration ends and run_once checks the clock. */
}

/* The alarm expired and libev stopped it: take back the reference that
 * stopping dropped.  The loop iterates, and the prepare watcher ticks. */
static void on_alarm(struct ev_loop *loop, ev_timer *t, int revents)
{
    ref_stopping(t->data);
}

static void on_soon(struct ev_loop *loop, ev_idle *i, int revents)
{
    struct state *s = i->data;

    ref_stopping(s);
    ev_idle_stop(loop, i);
}

/* Start the fresh entries, each for an fd checked open; a closed one gets
 * EV_ERROR.  An entry forgotten while queued (mask 0) is skipped. */
static void start_fresh(struct state *s)
{
    struct entry *e;

    while ((e = s->fresh) != NULL) {
        s->fresh = e->next;
        e->queued = 0;
        if (e->mask == 0) {
            continue;
        }
        if (fcntl(e->io.fd, F_GETFD) < 0) {
            ev_feed_event(s->loop, &e->io, EV_ERROR);
            continue;
        }
        e->open = 1;
        ev_io_set(&e->io, e->io.fd, to_ev(e->mask));
        ev_io_start(s->loop, &e->io);
    }
}

/* Keep the foreign loop alive while the hub has work, and only then. */
static void hold(struct state *s, int busy)
{
    if (busy && !s->held) {
        ev_ref(s->loop);
    } else if (!busy && s->held) {
        ev_unref(s->loop);
    }
    s->held = busy;
}

/* Before each wait: the hub's tick on a foreign loop, then the starts it
 * (or anyone since the last iteration) asked for.  So tick must not destroy
 * the reactor. */
static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct state *s = p->data;

    s->r->dirty = 0; /* libev applies every change after this */
    if (s->foreign && s->r->hooks.tick != NULL) {
        s->r->hooks.tick(s->r->hooks.owner);
    }
    if (s->foreign) {
        hold(s, s->r->hooks.busy != NULL &&
                    s->r->hooks.busy(s->r->hooks.owner));
    }
    start_fresh(s);
}

/* Seconds from now until deadline for an ev_timer, rounded up to the
 * microsecond.  Our clock is read before libev's, so the timer's absolute
 * time (libev's now + delay) is never before the deadline. */
static ev_tstamp delay_until(struct state *s, int64_t deadline)
{
    int64_t left = deadline - usock__clock_ns();
    int64_t us;

    ev_now_update(s->loop);
    if (left <= 0) {
        return 0.;
    }
    us = left / 1000 + (left % 1000 != 0);
    return (ev_tstamp)us / 1e6;
}

/* Grow the fd table to cover fd; new entries are NULL. */
static int grow(struct state *s, int fd)
{
    size_t n = s->nfds ? s->nfds : MIN_FDS;
    struct entry **t;

    while (n <= (size_t)fd) {
        n *= 2;
    }
    t = usock__realloc(s->fds, n * sizeof(struct entry *));
    if (t == NULL) {
        errno = ENOMEM;
        return -1;
    }
    memset(t + s->nfds, 0, (n - s->nfds) * sizeof(struct entry *));
    s->fds = t;
    s->nfds = n;
    return 0;
}

/* The entry of fd, made on first use.  NULL with errno ENOMEM. */
static struct entry *entry_of(struct state *s, int fd)
{
    struct entry *e;

    if ((size_t)fd >= s->nfds && grow(s, fd) != 0) {
        return NULL;
    }
    e = s->fds[fd];
    if (e == NULL) {
        if (usock__memalign((void **)&e, 64, sizeof(*e)) != 0) {
            errno = ENOMEM;
            return NULL;
        }
        *e = (struct entry){0};
        ev_io_init(&e->io, on_io, fd, 0);
        e->io.data = s;
        s->fds[fd] = e;
    }
    return e;
}

static void start_internal(struct state *s)
{
    ev_async_init(&s->wake, on_wake);
    ev_timer_init(&s->until, on_until, 0., 0.);
    ev_timer_init(&s->alarm, on_alarm, 0., 0.);
    ev_idle_init(&s->soon, on_soon);
    ev_prepare_init(&s->prep, on_prepare);
    s->wake.data = s->until.data = s->alarm.data = s;
    s->soon.data = s->prep.data = s;
    ev_async_start(s->loop, &s->wake);
    unref_started(s);
    ev_prepare_start(s->loop, &s->prep);
    unref_started(s);
}

/*
 * libev aborts when an allocation fails (ev.pod, ev_set_allocator) and
 * when a system call it retries fails (ev_set_syserr_cb: epoll_wait).
 * Both settings are process-wide.  We install ours at the first reactor
 * made on a loop of our own, and never when the first one is a daemon's
 * loop (usock_hub_use_ev_loop): that daemon keeps its own settings.
 *
 * Allocation: libev cannot take a NULL back, so ev_alloc never returns
 * one.  On failure it frees an emergency reserve kept for this moment and
 * tries again; while that is not enough it waits (1 ms, doubling to
 * 100 ms) and tries again.  A hub out of memory inside libev stalls until
 * memory comes back instead of killing the process.
 *
 * A failed system call is noted for run_once, which returns -1 with its
 * errno: the hub then ends its blocked calls with it (never a spin).
 */
static void *reserve;                     /* freed at the first failure */
static __thread int syserr;               /* errno of libev's last failure */
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void *ev_alloc(void *p, long size)
{
    long gap = 1000000;

    if (size == 0) {
        free(p);
        return NULL;
    }
    for (;;) {
        void *q = usock__realloc(p, (size_t)size);
        if (q != NULL) {
            return q;
        }
        void *r = __atomic_exchange_n(&reserve, NULL, __ATOMIC_ACQ_REL);
        if (r != NULL) {
            free(r);
            continue;
        }
        struct timespec ts = {0, gap};
        nanosleep(&ts, NULL);
        gap = gap * 2 > 100000000 ? 100000000 : gap * 2;
    }
}

static void on_syserr(const char *msg)
{
    (void)msg;
    syserr = errno != 0 ? errno : EIO;
}

static void install(void)
{
    reserve = malloc((size_t)256 * 1024);
    ev_set_allocator(ev_alloc);
    ev_set_syserr_cb(on_syserr);
}

static int init(struct usock__reactor *r, void *foreign_loop)
{
    static int first = 1; /* atomic: the first init decides */
    struct state *s;

    if (__atomic_exchange_n(&first, 0, __ATOMIC_ACQ_REL) &&
        foreign_loop == NULL) {
        pthread_once(&install_once, install);
    }
    s = usock__calloc(1, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    s->r = r;
    s->outer = s->inner = s->kick = -1;
    s->foreign = foreign_loop != NULL;
    s->loop = foreign_loop;
    if (s->loop == NULL) {
        errno = 0;
        s->loop = ev_loop_new(EVFLAG_AUTO);
        if (s->loop == NULL) {
            errno = errno ? errno : ENOMEM;
            free(s);
            return -1;
        }
    }
    /* libev aborts when it cannot make its wake-up fd: make sure one fd is
     * free first, and fail politely when none is. */
    int probe = eventfd(0, EFD_CLOEXEC);
    if (probe < 0) {
        int e = errno;
        if (!s->foreign) {
            ev_loop_destroy(s->loop);
        }
        free(s);
        errno = e;
        return -1;
    }
    close(probe);
    start_internal(s);
    r->impl = s;
    return 0;
}

/* Stop the alarm and the idle watcher of timer_set, if they run. */
static void stop_alarm(struct state *s)
{
    if (ev_is_active(&s->alarm)) {
        ref_stopping(s);
        ev_timer_stop(s->loop, &s->alarm);
    }
    if (ev_is_active(&s->soon)) {
        ref_stopping(s);
        ev_idle_stop(s->loop, &s->soon);
    }
}

static void destroy(struct usock__reactor *r)
{
    struct state *s = r->impl;
    size_t fd;

    if (s == NULL) {
        return;
    }
    for (fd = 0; fd < s->nfds; fd++) {
        if (s->fds[fd] != NULL) {
            ev_io_stop(s->loop, &s->fds[fd]->io);
            free(s->fds[fd]);
        }
    }
    free(s->fds);
    free(s->fired);
    hold(s, 0);
    stop_alarm(s);
    ev_timer_stop(s->loop, &s->until);
    ref_stopping(s);
    ev_prepare_stop(s->loop, &s->prep);
    ref_stopping(s);
    ev_async_stop(s->loop, &s->wake);
    if (s->outer >= 0) {
        ev_fork_stop(s->loop, &s->reborn);
        close(s->outer);
        close(s->kick);
    }
    if (!s->foreign) {
        ev_loop_destroy(s->loop);
    }
    free(s);
    r->impl = NULL;
}

/* A new watcher takes fd over: the old one is told it watches nothing. */
static void take_over(struct entry *e, struct usock__io *w, int events)
{
    if (e->w != NULL && e->w != w) {
        e->w->events = 0;
    }
    e->w = events != 0 ? w : NULL;
}

/* Start e's ev_io for its fd.  An fd number not yet checked open waits
 * for start_fresh. */
static void start(struct state *s, struct entry *e)
{
    s->r->dirty = 1;
    if (!e->open) {
        if (!e->queued) {
            e->queued = 1;
            e->next = s->fresh;
            s->fresh = e;
        }
        return;
    }
    /* The fd is the one start_fresh set (ev.pod, "the special problem of
     * disappearing file descriptors"): only the mask changes, so libev
     * need not tell the kernel again when the old mask comes back before
     * the next wait. */
    ev_io_modify(&e->io, to_ev(e->mask));
    ev_io_start(s->loop, &e->io);
}

static int io_set(struct usock__reactor *r, struct usock__io *w, int fd,
                  int events)
{
    struct state *s = r->impl;
    struct entry *e;

    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    events &= USOCK__IN | USOCK__OUT;
    if (events == 0 && ((size_t)fd >= s->nfds || s->fds[fd] == NULL)) {
        e = NULL;
    } else if ((e = entry_of(s, fd)) == NULL) {
        return -1;
    }
    w->fd = fd;
    w->events = events;
    if (e == NULL) {
        return 0;
    }
    if (e->gen != w->gen) {
        /* Another file behind this fd number: libev must register it
         * anew (start_fresh sets the fd again). */
        ev_io_stop(s->loop, &e->io);
        e->open = 0;
        e->gen = w->gen;
    }
    take_over(e, w, events);
    e->mask = (unsigned char)events;
    if (events == 0 && s->foreign) {
        /* An armed io would keep the daemon's ev_run alive. */
        ev_io_stop(s->loop, &e->io);
        return 0;
    }
    if (events == 0 || e->queued ||
        (ev_is_active(&e->io) &&
         (e->io.events & (EV_READ | EV_WRITE)) == to_ev(events))) {
        /* On our own loop mask 0 disarms lazily: io stays started until
         * its next event (on_io stops it then, and no callback is made),
         * so a wait that comes back for the same mask first costs
         * nothing. */
        return 0;
    }
    ev_io_stop(s->loop, &e->io);
    start(s, e);
    return 0;
}

static void io_forget(struct usock__reactor *r, int fd)
{
    struct state *s = r->impl;
    struct entry *e;

    if (fd < 0 || (size_t)fd >= s->nfds || s->fds[fd] == NULL) {
        return;
    }
    e = s->fds[fd];
    /* ev_io_stop clears a pending event too, even on a stopped watcher. */
    ev_io_stop(s->loop, &e->io);
    if (e->w != NULL) {
        e->w->events = 0;
    }
    e->w = NULL;
    e->mask = 0;
    e->open = 0;
}

/* Foreign loop only: make the loop iterate, and so tick, at or after
 * deadline.  A deadline already past uses an idle watcher, so the loop does
 * not sleep (libev waits at least its backend's minimum for a timer). */
static void timer_set(struct usock__reactor *r, int64_t deadline)
{
    struct state *s = r->impl;

    if (!s->foreign) {
        return;
    }
    stop_alarm(s);
    if (deadline == USOCK__NEVER) {
        return;
    }
    if (deadline <= usock__clock_ns()) {
        ev_idle_start(s->loop, &s->soon);
    } else {
        ev_timer_set(&s->alarm, delay_until(s, deadline), 0.);
        ev_timer_start(s->loop, &s->alarm);
    }
    unref_started(s);
}

static void wakeup(struct usock__reactor *r)
{
    struct state *s = r->impl;
    int k = __atomic_load_n(&s->kick, __ATOMIC_ACQUIRE);

    ev_async_send(s->loop, &s->wake);
    if (k >= 0 && !__atomic_exchange_n(&s->kicked, 1, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        if (write(k, &one, sizeof one) < 0) {
            /* The counter is full (it never is): the fd is readable. */
        }
    }
}

/* Take in a wakeup written to kick: read it, then clear `kicked` (a waker
 * that saw it still set skipped its write, and its message is already
 * queued for the hub, which looks after this pass). */
static void unkick(struct state *s)
{
    if (s->kick >= 0 && __atomic_load_n(&s->kicked, __ATOMIC_ACQUIRE)) {
        uint64_t n;
        if (read(s->kick, &n, sizeof n) < 0) {
            /* EAGAIN: already read. */
        }
        __atomic_exchange_n(&s->kicked, 0, __ATOMIC_SEQ_CST);
        s->woken = 1;
    }
}

/* The epoll fd of loop (its backend is epoll, which is embeddable), or -1
 * with errno ENOMEM. */
static int backend_fd(struct ev_loop *loop)
{
    struct ev_loop *probe = ev_loop_new(EVBACKEND_SELECT | EVFLAG_NOENV);
    ev_embed w;
    int fd;

    if (probe == NULL) {
        errno = ENOMEM;
        return -1;
    }
    ev_embed_init(&w, NULL, loop);
    ev_embed_start(probe, &w); /* never runs: no system call */
    fd = w.io.fd;
    ev_embed_stop(probe, &w);
    ev_loop_destroy(probe);
    return fd;
}

/* Put the loop's backend fd in the outer set.  0, or -1 with errno. */
static int add_inner(struct state *s)
{
    struct epoll_event ev = {.events = EPOLLIN};

    if ((ev.data.fd = backend_fd(s->loop)) < 0) {
        return -1;
    }
    if (epoll_ctl(s->outer, EPOLL_CTL_ADD, ev.data.fd, &ev) < 0 &&
        errno != EEXIST) {
        return -1;
    }
    s->inner = ev.data.fd;
    return 0;
}

static void on_reborn(struct ev_loop *loop, ev_fork *f, int revents)
{
    struct state *s = f->data;

    s->renew = 1; /* libev makes the new fd after the fork watchers */
}

/* After a pass in which libev made its backend fd anew (the old one left
 * the outer set when libev closed it). */
static void keep_inner(struct state *s)
{
    if (s->renew) {
        s->renew = 0;
        if (add_inner(s) < 0) {
            s->renew = 1; /* try again after the next pass */
        }
    }
}

static int wait_fd(struct usock__reactor *r)
{
    struct state *s = r->impl;
    struct epoll_event ev = {.events = EPOLLIN};
    int o, k, e;

    if (s->outer >= 0) {
        return s->outer;
    }
    if (s->foreign || ev_backend(s->loop) != EVBACKEND_EPOLL ||
        !(ev_embeddable_backends() & EVBACKEND_EPOLL) ||
        !(ev_supported_backends() & EVBACKEND_SELECT)) {
        errno = ENOTSUP;
        return -1;
    }
    if ((o = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        return -1;
    }
    if ((k = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        goto fail_outer;
    }
    ev.data.fd = k;
    s->outer = o;
    if (epoll_ctl(o, EPOLL_CTL_ADD, k, &ev) < 0 || add_inner(s) < 0) {
        s->outer = -1;
        goto fail_kick;
    }
    ev_fork_init(&s->reborn, on_reborn);
    s->reborn.data = s;
    ev_fork_start(s->loop, &s->reborn);
    __atomic_store_n(&s->kick, k, __ATOMIC_RELEASE);
    return o;
fail_kick:
    e = errno;
    close(k);
    errno = e;
fail_outer:
    e = errno;
    close(o);
    errno = e;
    return -1;
}

/* One loop iteration with `until` armed for the deadline. */
static void iterate(struct state *s, int64_t deadline)
{
    if (deadline != USOCK__NEVER) {
        ev_timer_set(&s->until, delay_until(s, deadline), 0.);
        ev_timer_start(s->loop, &s->until);
    }
    ev_run(s->loop, EVRUN_ONCE);
    ev_timer_stop(s->loop, &s->until);
}

/* A past deadline (0 included) polls without blocking.  Otherwise iterate
 * until a callback, a wake-up or the deadline: libev may wake a little
 * early, and a wait never ends before its deadline.  On a foreign loop one
 * iteration is made, as other watchers there may be what the caller awaits. */
static int run_once(struct usock__reactor *r, int64_t deadline)
{
    struct state *s = r->impl;

    s->calls = 0;
    s->woken = 0;
    syserr = 0;
    unkick(s);
    /* Not on a daemon's loop: there tasks run inside ev_run (tick) and
     * could close and reuse an fd between an event and its callback. */
    s->deferring = !s->foreign;
    if (deadline != USOCK__NEVER && deadline <= usock__clock_ns()) {
        ev_run(s->loop, EVRUN_NOWAIT);
    } else {
        do {
            iterate(s, deadline);
        } while (!s->foreign && s->calls == 0 && s->nfired == 0 &&
                 !s->woken && syserr == 0 &&
                 (deadline == USOCK__NEVER || usock__clock_ns() < deadline));
    }
    s->deferring = 0;
    keep_inner(s);
    call_fired(s);
    if (syserr != 0) {
        errno = syserr;
        syserr = 0;
        return -1;
    }
    return s->calls;
}

/* The libev backend: standalone on its own loop, or on a daemon's loop. */
const struct usock__reactor_ops usock__reactor_ev = {
    .name = "ev",
    .init = init,
    .destroy = destroy,
    .io_set = io_set,
    .io_forget = io_forget,
    .timer_set = timer_set,
    .wakeup = wakeup,
    .run_once = run_once,
    .wait_fd = wait_fd,
};
