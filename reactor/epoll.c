/*
 * The epoll(7) backend, Linux only: level-triggered, one epoll set per
 * reactor, an fd-indexed table of small records, and an eventfd for
 * wakeup().
 *
 *   fds:  [0] {w, gen, want, kmask, reg} | ... | [7] {w7, g7, IN, IN, 1} ...
 *   epoll set: fd 7 → data = gen << 32 | 7,  eventfd → data = WAKE
 *
 * `want` is the mask the owner asked for, `kmask` the one the kernel has.
 * A change that widens the mask (a first registration, EPOLL_CTL_ADD,
 * included) goes on a change list applied before the next wait, so
 * IN -> 0 -> IN between two waits costs nothing, and an fd closed before
 * any wait saw it is reported (EBADF below) as poll(2) reports it.
 * Narrowing is lazy: the kernel keeps the wider mask until an event
 * outside `want` comes, and only then is the fd narrowed (MOD, or DEL when
 * nothing is wanted and the event is a hang-up or error: an epoll set
 * reports those whatever the mask).  The hub narrows to 0 when it wakes a
 * task and widens again when that task next waits, usually before the
 * next pass: no system call per round trip.  io_set fails only when a
 * table cannot grow (ENOMEM); a registration the kernel has no memory for
 * stays on the list and is tried again at each pass.
 *
 * The generation of the file (usock__io.gen) is in each event's data: an
 * event collected for a file that was forgotten, or whose fd number now
 * names another file, is dropped.  epoll_ctl's answers:
 *   EEXIST on ADD: the same file is still registered (not forgotten): MOD;
 *   ENOENT on MOD: the file was closed without io_forget: ADD;
 *   EPERM: a file epoll cannot watch (a regular file): always ready, as
 *          poll(2) says, IN|OUT at each pass;
 *   EBADF: the fd is not open: IN|OUT|ERR at each pass, as POLLNVAL.
 * Those last two are "fake" entries, on a list of their own that each
 * run_once reports without blocking.  A file closed without io_forget but
 * kept open elsewhere (dup, fork) stays in the set: its events are dropped
 * by the generation check, yet a level-triggered one keeps waking the
 * wait.  That breaks the contract of reactor.h (io_forget before close).
 *
 * wait_fd is the epoll fd itself: readable while events are pending.
 * wakeup() writes the eventfd unless a write is already pending unread
 * (the `kicked` flag), so a burst of posts costs one write.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "reactor.h"

#define MIN_FDS   64   /* slots at first: 1 KiB, doubled as fds come */
#define MIN_LIST  64
#define BATCH     512                /* events per epoll_wait */
#define WAKE      UINT64_MAX         /* the eventfd's data */

/* 16 bytes: four to a cache line. */
struct slot {
    struct usock__io *w;  /* the watcher, NULL when none */
    unsigned gen;         /* the file behind fd: usock__io.gen */
    unsigned char want;   /* USOCK__ mask the owner wants */
    unsigned char kmask;  /* USOCK__ mask the kernel has */
    unsigned char reg;    /* registered in the epoll set */
    unsigned char flags;  /* QUEUED, FAKE_READY, FAKE_BAD */
};
_Static_assert(sizeof(struct slot) == 16, "four slots to a cache line");

#define QUEUED     1 /* on the change list */
#define FAKE_READY 2 /* EPERM: always ready (IN|OUT) */
#define FAKE_BAD   4 /* EBADF: not open (IN|OUT|ERR) */
#define FAKE       (FAKE_READY | FAKE_BAD)

struct state {
    int ep;                 /* the epoll set */
    int wake;               /* the eventfd in it */
    int kicked;             /* atomic: a write to wake is not yet read */
    int woken;              /* the wake fd was read in this pass */
    struct slot *fds;       /* fd -> slot */
    size_t nfds;
    int *changes;           /* fds whose mask widened since the last wait */
    size_t nchanges, capchanges;
    size_t kept;            /* the first `kept` changes wait for memory */
    int *fakes;             /* fds with a FAKE flag */
    size_t nfakes, capfakes;
    int *scratch;           /* a copy of fakes while they are reported */
    unsigned *scratch_gen;
    size_t capscratch;
    struct epoll_event ev[BATCH];
};

static uint32_t to_epoll(int mask)
{
    return ((mask & USOCK__IN) ? EPOLLIN : 0u) |
           ((mask & USOCK__OUT) ? EPOLLOUT : 0u);
}

/* An error or hang-up wakes both directions, as poll(2) does. */
static int to_usock(uint32_t e)
{
    if (e & (EPOLLERR | EPOLLHUP)) {
        return USOCK__IN | USOCK__OUT;
    }
    return ((e & EPOLLIN) ? USOCK__IN : 0) | ((e & EPOLLOUT) ? USOCK__OUT : 0);
}

static int ctl(struct state *s, int op, int fd, unsigned gen, int mask)
{
    struct epoll_event e = {.events = to_epoll(mask)};

    e.data.u64 = (uint64_t)gen << 32 | (uint32_t)fd;
    return epoll_ctl(s->ep, op, fd, &e);
}

/* Grow an int list to hold one more. */
static int grow_list(int **list, size_t *cap)
{
    size_t n = *cap ? *cap * 2 : MIN_LIST;
    int *l = usock__realloc(*list, n * sizeof(int));

    if (l == NULL) {
        errno = ENOMEM;
        return -1;
    }
    *list = l;
    *cap = n;
    return 0;
}

/* Grow the fd table to cover fd; new slots are empty. */
static int grow(struct state *s, int fd)
{
    size_t n = s->nfds ? s->nfds : MIN_FDS;
    struct slot *t;

    while (n <= (size_t)fd) {
        n *= 2;
    }
    if (n > SIZE_MAX / sizeof(*t)) {
        errno = ENOMEM;
        return -1;
    }
    t = usock__realloc(s->fds, n * sizeof(*t));
    if (t == NULL) {
        errno = ENOMEM;
        return -1;
    }
    memset(t + s->nfds, 0, (n - s->nfds) * sizeof(*t));
    s->fds = t;
    s->nfds = n;
    return 0;
}

/* Put fd on the fake list with flag (FAKE_READY or FAKE_BAD). */
static int fake_add(struct state *s, int fd, unsigned char flag)
{
    struct slot *e = &s->fds[fd];

    if (!(e->flags & FAKE)) {
        if (s->nfakes == s->capfakes) {
            size_t cap = s->capfakes;
            if (grow_list(&s->fakes, &s->capfakes) != 0) {
                return -1;
            }
            /* The scratch copy follows: reporting never allocates. */
            if (s->capscratch < s->capfakes) {
                int *sc = usock__realloc(s->scratch,
                                         s->capfakes * sizeof(int));
                unsigned *sg;
                if (sc == NULL) {
                    s->capfakes = cap;
                    errno = ENOMEM;
                    return -1;
                }
                s->scratch = sc;
                sg = usock__realloc(s->scratch_gen,
                                    s->capfakes * sizeof(unsigned));
                if (sg == NULL) {
                    s->capfakes = cap;
                    errno = ENOMEM;
                    return -1;
                }
                s->scratch_gen = sg;
                s->capscratch = s->capfakes;
            }
        }
        s->fakes[s->nfakes++] = fd;
    }
    e->flags = (unsigned char)((e->flags & ~FAKE) | flag);
    return 0;
}

static void fake_del(struct state *s, int fd)
{
    for (size_t i = 0; i < s->nfakes; i++) {
        if (s->fakes[i] == fd) {
            s->fakes[i] = s->fakes[--s->nfakes];
            break;
        }
    }
    s->fds[fd].flags &= (unsigned char)~FAKE;
}

/* Register fd for mask (nonzero).  0 (registered, or made a fake entry
 * that the next pass reports), or -1 with errno. */
static int add(struct state *s, int fd, struct slot *e, int mask)
{
    int rc = ctl(s, EPOLL_CTL_ADD, fd, e->gen, mask);

    if (rc < 0 && errno == EEXIST) {
        rc = ctl(s, EPOLL_CTL_MOD, fd, e->gen, mask);
    }
    if (rc == 0) {
        e->reg = 1;
        e->kmask = (unsigned char)mask;
        return 0;
    }
    if (errno == EPERM) {
        return fake_add(s, fd, FAKE_READY);
    }
    if (errno == EBADF) {
        return fake_add(s, fd, FAKE_BAD);
    }
    return -1;
}

/* Drop fd from the kernel's set, if it is there. */
static void unregister(struct state *s, int fd, struct slot *e)
{
    if (e->reg) {
        (void)epoll_ctl(s->ep, EPOLL_CTL_DEL, fd, NULL);
        e->reg = 0;
    }
    e->kmask = 0;
}

static void release(struct state *s)
{
    if (s->wake >= 0) {
        close(s->wake);
    }
    if (s->ep >= 0) {
        close(s->ep);
    }
    free(s->fds);
    free(s->changes);
    free(s->fakes);
    free(s->scratch);
    free(s->scratch_gen);
    free(s);
}

static int init(struct usock__reactor *r, void *foreign_loop)
{
    struct epoll_event e = {.events = EPOLLIN};
    struct state *s;
    int err;

    if (foreign_loop != NULL) {
        errno = ENOTSUP; /* only the ev backend lives in a libev loop */
        return -1;
    }
    s = usock__calloc(1, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    s->ep = s->wake = -1;
    if (grow(s, 0) != 0 || grow_list(&s->changes, &s->capchanges) != 0) {
        err = ENOMEM;
        goto fail;
    }
    if ((s->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (s->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        err = errno;
        goto fail;
    }
    e.data.u64 = WAKE;
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, s->wake, &e) < 0) {
        err = errno;
        goto fail;
    }
    r->impl = s;
    return 0;

fail:
    release(s);
    errno = err;
    return -1;
}

static void destroy(struct usock__reactor *r)
{
    struct state *s = r->impl;

    if (s == NULL) {
        return;
    }
    release(s);
    r->impl = NULL;
}

static int io_set(struct usock__reactor *r, struct usock__io *w, int fd,
                  int events)
{
    struct state *s = r->impl;
    struct slot *e;

    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    events &= USOCK__IN | USOCK__OUT;
    if ((size_t)fd >= s->nfds) {
        if (events == 0) {
            w->fd = fd;
            w->events = 0;
            return 0;
        }
        if (grow(s, fd) != 0) {
            return -1;
        }
    }
    e = &s->fds[fd];
    if (e->w == w && e->want == events && e->gen == w->gen) {
        w->fd = fd;
        return 0; /* the common case: nothing changes */
    }
    if (e->gen != w->gen) {
        /* Another file behind this fd number: whatever the set holds for
         * fd is the old file's, or nothing (it was forgotten or closed). */
        unregister(s, fd, e);
        if (e->flags & FAKE) {
            fake_del(s, fd);
        }
        e->gen = w->gen;
    }
    if (events == 0 && (e->flags & FAKE)) {
        fake_del(s, fd); /* a fake entry only reports while watched */
    }
    if ((events & ~e->kmask) != 0 && !(e->flags & (FAKE | QUEUED))) {
        if (s->nchanges == s->capchanges &&
            grow_list(&s->changes, &s->capchanges) != 0) {
            return -1;
        }
        s->changes[s->nchanges++] = fd;
        e->flags |= QUEUED;
        r->dirty = 1;
    }
    if (e->w != NULL && e->w != w) {
        e->w->events = 0; /* w takes fd over */
    }
    e->w = events != 0 ? w : NULL;
    e->want = (unsigned char)events;
    w->fd = fd;
    w->events = events;
    return 0;
}

static void io_forget(struct usock__reactor *r, int fd)
{
    struct state *s = r->impl;
    struct slot *e;

    if (fd < 0 || (size_t)fd >= s->nfds) {
        return;
    }
    e = &s->fds[fd];
    unregister(s, fd, e);
    if (e->flags & FAKE) {
        fake_del(s, fd);
    }
    if (e->w != NULL) {
        e->w->events = 0;
    }
    e->w = NULL;
    e->want = 0;
    /* The gen stays: events already collected carry it, and e->w == NULL
     * drops them; a new file brings a new gen. */
}

static void timer_set(struct usock__reactor *r, int64_t deadline)
{
    /* Standalone only: the deadline is given to run_once. */
    (void)r;
    (void)deadline;
}

/* Thread-safe and async-signal-safe; errno preserved.  Only the first
 * waker since the last drain writes. */
static void wakeup(struct usock__reactor *r)
{
    struct state *s = r->impl;
    uint64_t one = 1;
    int saved = errno;

    if (!__atomic_exchange_n(&s->kicked, 1, __ATOMIC_SEQ_CST)) {
        if (write(s->wake, &one, sizeof(one)) < 0) {
            /* EAGAIN: the counter is full, so the fd is readable. */
        }
    }
    errno = saved;
}

/* Read the eventfd, then let the next waker write again.  A waker that
 * found `kicked` still set queued its message before this, and the hub
 * looks at its messages after run_once returns. */
static void drain_wake(struct state *s)
{
    uint64_t n;

    if (read(s->wake, &n, sizeof(n)) < 0) {
        /* EAGAIN: already read. */
    }
    __atomic_store_n(&s->kicked, 0, __ATOMIC_SEQ_CST);
    s->woken = 1;
}

/* Hand the widened masks (and first registrations) to the kernel.  One
 * the kernel has no memory for (ENOMEM, ENOSPC) stays on the list for the
 * next pass: the fd is not watched until then. */
static void apply_changes(struct usock__reactor *r, struct state *s)
{
    size_t keep = 0;

    for (size_t i = 0; i < s->nchanges; i++) {
        int fd = s->changes[i];
        struct slot *e = &s->fds[fd];
        int rc;

        e->flags &= (unsigned char)~QUEUED;
        if ((e->flags & FAKE) || (e->want & ~e->kmask) == 0) {
            continue; /* forgotten, or narrowed back since */
        }
        if (e->reg) {
            rc = ctl(s, EPOLL_CTL_MOD, fd, e->gen, e->want);
            if (rc == 0) {
                e->kmask = e->want;
                continue;
            }
            if (errno != ENOENT) {
                continue; /* not a state a socket reaches */
            }
            /* Closed without io_forget: the kernel dropped it. */
            e->reg = 0;
            e->kmask = 0;
        }
        if (add(s, fd, e, e->want) != 0) {
            e->flags |= QUEUED;
            s->changes[keep++] = fd;
        }
    }
    s->nchanges = s->kept = keep;
    (void)r;
}

/* The fd of an event is outside the wanted mask: narrow the kernel's. */
static void narrow(struct state *s, int fd, struct slot *e, uint32_t got)
{
    if (e->want == 0) {
        if (got & (EPOLLERR | EPOLLHUP)) {
            unregister(s, fd, e); /* reported whatever the mask */
        } else if (ctl(s, EPOLL_CTL_MOD, fd, e->gen, 0) == 0) {
            e->kmask = 0;
        }
    } else if (ctl(s, EPOLL_CTL_MOD, fd, e->gen, e->want) == 0) {
        e->kmask = e->want;
    }
}

/* Prefetch what the callback of event i touches first: its slot was
 * fetched two events ago, so its watcher is read now. */
static void prefetch_watcher(struct state *s, uint64_t data)
{
    uint32_t fd = (uint32_t)data;
    const struct usock__io *w;

    if (data == WAKE || fd >= s->nfds) {
        return;
    }
    w = s->fds[fd].w;
    if (w != NULL && w->hot != NULL) {
        const void *p;
        memcpy(&p, w->hot, sizeof(p));
        __builtin_prefetch(p);
    }
}

/* One callback, with the fd's record as the hub's prefetch hint. */
static void fire(struct usock__reactor *r, struct slot *e, int ev)
{
    r->hint = e;
    e->w->cb(e->w, ev);
    r->hint = NULL;
}

static int dispatch(struct usock__reactor *r, struct state *s, int n)
{
    int calls = 0;

    for (int i = 0; i < n && i < 4; i++) {
        uint32_t fd = (uint32_t)s->ev[i].data.u64;
        if (fd < s->nfds && s->ev[i].data.u64 != WAKE) {
            __builtin_prefetch(&s->fds[fd]);
        }
    }
    for (int i = 0; i < n; i++) {
        uint64_t data = s->ev[i].data.u64;
        uint32_t got = s->ev[i].events;
        uint32_t fd = (uint32_t)data;
        struct slot *e;
        int ev;

        if (i + 4 < n) {
            uint32_t f4 = (uint32_t)s->ev[i + 4].data.u64;
            if (f4 < s->nfds && s->ev[i + 4].data.u64 != WAKE) {
                __builtin_prefetch(&s->fds[f4]);
            }
        }
        if (i + 2 < n) {
            prefetch_watcher(s, s->ev[i + 2].data.u64);
        }
        if (data == WAKE) {
            drain_wake(s);
            continue;
        }
        if (fd >= s->nfds) {
            continue;
        }
        e = &s->fds[fd];
        if (e->gen != (unsigned)(data >> 32) || !e->reg) {
            continue; /* another file, or forgotten in this pass */
        }
        ev = to_usock(got);
        if (e->want == 0 ||
            ((e->kmask & ~e->want) != 0 && (ev & ~e->want) != 0)) {
            narrow(s, fd, e, got);
        }
        if (e->w == NULL) {
            continue;
        }
        if (!(got & (EPOLLERR | EPOLLHUP))) {
            ev &= e->want;
        }
        if (ev == 0) {
            continue;
        }
        fire(r, e, ev);
        calls++;
    }
    return calls;
}

/* Report the fake entries: each one present when the pass began, and
 * still there (same file, still fake) when its turn comes. */
static int dispatch_fakes(struct usock__reactor *r, struct state *s)
{
    size_t n = s->nfakes;
    int calls = 0;

    for (size_t i = 0; i < n; i++) {
        s->scratch[i] = s->fakes[i];
        s->scratch_gen[i] = s->fds[s->fakes[i]].gen;
    }
    for (size_t i = 0; i < n; i++) {
        int fd = s->scratch[i];
        struct slot *e = &s->fds[fd];
        int ev;

        if (e->gen != s->scratch_gen[i] || !(e->flags & FAKE) ||
            e->w == NULL) {
            continue;
        }
        ev = (e->flags & FAKE_BAD) ? USOCK__IN | USOCK__OUT | USOCK__ERR
                                   : (e->want & (USOCK__IN | USOCK__OUT));
        if (ev == 0) {
            continue;
        }
        fire(r, e, ev);
        calls++;
    }
    return calls;
}

/* Some change on the list was queued since the last apply (not only
 * ones kept back for lack of kernel memory). */
static int pending_new(struct state *s)
{
    return s->nchanges > s->kept;
}

/* A past deadline (0 included) polls once without blocking.  Otherwise
 * wait again after a pass that made no callback and took no wakeup (all
 * its events were narrowed away or dropped), until the deadline: a wait
 * never ends early with nothing to report. */
static int run_once(struct usock__reactor *r, int64_t deadline)
{
    struct state *s = r->impl;
    int n, timeout, calls;

    do {
        if (s->nchanges != 0) {
            apply_changes(r, s);
        }
        timeout = s->nfakes != 0 ? 0 : usock__ms_until(deadline);
        s->woken = 0;
        n = epoll_wait(s->ep, s->ev, BATCH, timeout);
        if (n < 0) {
            return errno == EINTR ? 0 : -1;
        }
        calls = dispatch(r, s, n);
        if (s->nfakes != 0) {
            calls += dispatch_fakes(r, s);
        }
    } while (calls == 0 && n > 0 && !s->woken && timeout != 0);
    /* Changes the callbacks made reach the kernel in the next pass; one
     * kept for lack of kernel memory does not make the hub spin. */
    r->dirty = s->nfakes != 0 || (s->nchanges != 0 && pending_new(s));
    return calls;
}

static int wait_fd(struct usock__reactor *r)
{
    struct state *s = r->impl;

    return s->ep;
}

/* The epoll backend: standalone only (init with a loop is ENOTSUP), never
 * calls the hooks. */
const struct usock__reactor_ops usock__reactor_epoll = {
    .name = "epoll",
    .init = init,
    .destroy = destroy,
    .io_set = io_set,
    .io_forget = io_forget,
    .timer_set = timer_set,
    .wakeup = wakeup,
    .run_once = run_once,
    .wait_fd = wait_fd,
};
