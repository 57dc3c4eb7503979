/*
 * The poll(2) backend: no dependency, one system call per wait.
 *
 * The pollfd array is handed to poll(2) as it is, so every change made by
 * io_set is seen by the next wait.  Slot 0 always holds the wake-up fd; a
 * parallel array remembers the watcher of each other slot, and an fd-indexed
 * array finds an fd's slot in O(1).  Removal moves the last slot into the
 * hole, so no slot is ever empty.
 *
 *   pfd:   [0] wake fd | [1] fd 7, POLLIN | [2] fd 3, POLLOUT | ...  n used
 *   who:   [0] NULL    | [1] w7           | [2] w3            | ...
 *   slot:  fd 0 → 0 (not watched), ..., fd 3 → 2, ..., fd 7 → 1, ...
 *
 * Slot 0 is never in `slot`, which is why 0 there can mean "not watched".
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_EVENTFD
#include <sys/eventfd.h>
#endif

#include "reactor.h"

#define MIN_SLOTS 64
#define MIN_FDS   1024

struct state {
    struct pollfd *pfd;     /* what poll(2) sees; [0] is the wake-up fd */
    struct usock__io **who; /* the watcher of each slot */
    size_t n, cap;          /* slots used and allocated */
    unsigned *slot;         /* fd -> slot, 0 when not watched */
    size_t nslot;           /* entries of `slot` */
    int wake_rd, wake_wr;   /* the same eventfd, or a self-pipe */
};

/* Open the wake-up channel: an eventfd, or a self-pipe where there is none.
 * Both ends are non-blocking and close-on-exec. */
static int wake_open(struct state *s)
{
#ifdef HAVE_EVENTFD
    s->wake_rd = s->wake_wr = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return s->wake_rd < 0 ? -1 : 0;
#else
    int fds[2];

    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        return -1;
    }
    s->wake_rd = fds[0];
    s->wake_wr = fds[1];
    return 0;
#endif
}

static void wake_close(struct state *s)
{
    close(s->wake_rd);
    if (s->wake_wr != s->wake_rd) {
        close(s->wake_wr);
    }
}

/* Empty the wake-up channel.  An eventfd is emptied by one 8-byte read; a
 * pipe holds 8-byte tokens and is read until a read comes back short. */
static void wake_drain(struct state *s)
{
    uint64_t buf[8];

    while (read(s->wake_rd, buf, sizeof(buf)) == (ssize_t)sizeof(buf)) {
        continue;
    }
}

/* Grow pfd and who to hold at least one more slot. */
static int grow_slots(struct state *s)
{
    size_t cap = s->cap ? s->cap * 2 : MIN_SLOTS;
    struct pollfd *pfd;
    struct usock__io **who;

    pfd = usock__realloc(s->pfd, cap * sizeof(*pfd));
    if (pfd == NULL) {
        return -1;
    }
    s->pfd = pfd;
    who = usock__realloc(s->who, cap * sizeof(struct usock__io *));
    if (who == NULL) {
        return -1;
    }
    s->who = who;
    s->cap = cap;
    return 0;
}

/* Grow the fd -> slot map to cover fd; new entries are "not watched". */
static int grow_map(struct state *s, int fd)
{
    size_t n = s->nslot ? s->nslot : MIN_FDS;
    unsigned *slot;

    while (n <= (size_t)fd) {
        n *= 2;
    }
    if (n > SIZE_MAX / sizeof(*slot)) {
        errno = ENOMEM;
        return -1;
    }
    slot = usock__realloc(s->slot, n * sizeof(*slot));
    if (slot == NULL) {
        return -1;
    }
    memset(slot + s->nslot, 0, (n - s->nslot) * sizeof(*slot));
    s->slot = slot;
    s->nslot = n;
    return 0;
}

static short poll_mask(int events)
{
    return (short)(((events & USOCK__IN) ? POLLIN : 0) |
                   ((events & USOCK__OUT) ? POLLOUT : 0));
}

/* Append a slot for fd.  Its revents start at 0, so a slot added during a
 * dispatch gets no callback from events collected before it existed. */
static int add(struct state *s, struct usock__io *w, int fd, int events)
{
    if ((size_t)fd >= s->nslot && grow_map(s, fd) != 0) {
        return -1;
    }
    if (s->n == s->cap && grow_slots(s) != 0) {
        return -1;
    }
    s->pfd[s->n].fd = fd;
    s->pfd[s->n].events = poll_mask(events);
    s->pfd[s->n].revents = 0;
    s->who[s->n] = w;
    s->slot[fd] = (unsigned)s->n;
    s->n++;
    return 0;
}

/* Remove slot i (>= 1): the last slot moves into it, with its revents. */
static void del(struct state *s, size_t i)
{
    size_t last = s->n - 1;

    s->slot[s->pfd[i].fd] = 0;
    if (i != last) {
        s->pfd[i] = s->pfd[last];
        s->who[i] = s->who[last];
        s->slot[s->pfd[i].fd] = (unsigned)i;
    }
    s->n--;
}

static int init(struct usock__reactor *r, void *foreign_loop)
{
    struct state *s;

    if (foreign_loop != NULL) {
        errno = ENOTSUP;
        return -1;
    }
    s = usock__calloc(1, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    if (grow_slots(s) != 0 || grow_map(s, 0) != 0) {
        errno = ENOMEM;
        goto fail;
    }
    if (wake_open(s) != 0) {
        goto fail;
    }
    s->pfd[0].fd = s->wake_rd;
    s->pfd[0].events = POLLIN;
    s->pfd[0].revents = 0;
    s->who[0] = NULL;
    s->n = 1;
    r->impl = s;
    return 0;

fail:
    free(s->pfd);
    free(s->who);
    free(s->slot);
    free(s);
    return -1;
}

static void destroy(struct usock__reactor *r)
{
    struct state *s = r->impl;

    if (s == NULL) {
        return;
    }
    wake_close(s);
    free(s->pfd);
    free(s->who);
    free(s->slot);
    free(s);
    r->impl = NULL;
}

static int io_set(struct usock__reactor *r, struct usock__io *w, int fd,
                  int events)
{
    struct state *s = r->impl;
    size_t i;

    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    events &= USOCK__IN | USOCK__OUT;
    i = (size_t)fd < s->nslot ? s->slot[fd] : 0;
    if (i != 0 && s->who[i] == w && s->pfd[i].events == poll_mask(events)) {
        return 0;
    }
    if (i == 0) {
        if (events != 0 && add(s, w, fd, events) != 0) {
            return -1;
        }
    } else {
        if (s->who[i] != w) {
            s->who[i]->events = 0;
        }
        if (events == 0) {
            del(s, i);
        } else {
            s->pfd[i].events = poll_mask(events);
            s->who[i] = w;
        }
    }
    w->fd = fd;
    w->events = events;
    return 0;
}

static void io_forget(struct usock__reactor *r, int fd)
{
    struct state *s = r->impl;
    size_t i;

    if (fd < 0 || (size_t)fd >= s->nslot || s->slot[fd] == 0) {
        return;
    }
    i = s->slot[fd];
    s->who[i]->events = 0;
    del(s, i);
}

static void timer_set(struct usock__reactor *r, int64_t deadline)
{
    /* Standalone only: the deadline is given to run_once. */
    (void)r;
    (void)deadline;
}

/* Thread-safe and async-signal-safe: one write(2), errno preserved.  A full
 * pipe (EAGAIN) means a wake-up is already pending. */
static void wakeup(struct usock__reactor *r)
{
    struct state *s = r->impl;
    uint64_t one = 1;
    int saved = errno;

    if (write(s->wake_wr, &one, sizeof(one)) < 0) {
        /* EAGAIN: the reactor wakes up anyway. */
    }
    errno = saved;
}

/* poll(2) revents as USOCK__ bits: an error or hang-up wakes both
 * directions whatever was watched, and the owner filters. */
static int to_usock(short re)
{
    if (re & POLLNVAL) {
        return USOCK__IN | USOCK__OUT | USOCK__ERR;
    }
    if (re & (POLLERR | POLLHUP)) {
        return USOCK__IN | USOCK__OUT;
    }
    return ((re & POLLIN) ? USOCK__IN : 0) | ((re & POLLOUT) ? USOCK__OUT : 0);
}

/*
 * Call the watchers of the slots poll(2) marked, from the last slot down.
 * A callback may add or remove fds.  A removal moves the last slot into the
 * hole; the last slot is never below the current one while it still has
 * events to report, so every marked slot is visited exactly once, and a
 * removed slot's events vanish with it.  Each slot's revents is cleared
 * before its callback, and new slots start clear.
 */
static int dispatch(struct state *s, int ready)
{
    int calls = 0;
    size_t i;

    for (i = s->n; i-- > 1 && ready > 0;) {
        short re;
        int ev;

        if (i >= s->n || s->pfd[i].revents == 0) {
            continue;
        }
        re = s->pfd[i].revents;
        s->pfd[i].revents = 0;
        ready--;
        ev = to_usock(re);
        if (ev != 0) {
            s->who[i]->cb(s->who[i], ev);
            calls++;
        }
    }
    return calls;
}

static int run_once(struct usock__reactor *r, int64_t deadline)
{
    struct state *s = r->impl;
    int ready;

    ready = poll(s->pfd, s->n, usock__ms_until(deadline));
    if (ready <= 0) {
        return (ready < 0 && errno != EINTR) ? -1 : 0;
    }
    if (s->pfd[0].revents != 0) {
        s->pfd[0].revents = 0;
        ready--;
        wake_drain(s);
    }
    return dispatch(s, ready);
}

/* The poll(2) backend: standalone only (init with a loop is ENOTSUP), never
 * calls the hooks. */
const struct usock__reactor_ops usock__reactor_poll = {
    .name = "poll",
    .init = init,
    .destroy = destroy,
    .io_set = io_set,
    .io_forget = io_forget,
    .timer_set = timer_set,
    .wakeup = wakeup,
    .run_once = run_once,
};
