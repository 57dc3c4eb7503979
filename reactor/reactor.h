/*
 * The reactor: the one small interface between the hub and an event
 * backend.  It knows fds, one wake-up timer, and a cross-thread wake-up;
 * nothing here knows about sockets or tasks.
 *
 * Two backends implement it: reactor/poll.c (poll(2), no dependency) and
 * reactor/ev.c (libev).  Each exports exactly one `const struct
 * usock__reactor_ops`; every other function in them is static.
 *
 * Time is an absolute int64_t count of nanoseconds on CLOCK_MONOTONIC
 * (usock__clock_ns()); USOCK__NEVER means "no deadline".
 *
 *    hub ──io_set(w, fd, mask)──▶ backend ──(fd ready)──▶ w->cb(w, revents)
 *        ──run_once(deadline)───▶          ──(wakeup)───▶ (returns)
 *
 * Callbacks run inside run_once (or inside the daemon's ev_run when a foreign
 * loop is used) and must only enqueue work: they never switch stacks.
 */
#ifndef USOCKET_REACTOR_H
#define USOCKET_REACTOR_H

#include <stdint.h>

#include "base.h"

#define USOCK__IN 1  /* readable (POLLIN) */
#define USOCK__OUT 2 /* writable (POLLOUT) */
#define USOCK__ERR 4 /* POLLNVAL: the fd is not open; always with IN|OUT */

#define USOCK__NEVER INT64_MAX

struct usock__reactor;
struct usock__io;

/* revents: USOCK__IN and/or USOCK__OUT.  POLLERR/POLLHUP are reported as
 * IN|OUT so the retried system call surfaces the real error; POLLNVAL as
 * IN|OUT|ERR. */
typedef void (*usock__io_cb)(struct usock__io *w, int revents);

/*
 * An fd watcher.  The owner (a socket) embeds it and keeps it alive as long
 * as it is set; the backend remembers it per fd and calls cb.
 */
struct usock__io {
    usock__io_cb cb;
    const void *hot;  /* set by the owner, or NULL: the address of a
                         pointer to what cb will touch first (a hint: the
                         backend may prefetch it before making a batch of
                         callbacks) */
    int fd;        /* set by io_set */
    int events;    /* the mask last given to io_set: read-only for the owner */
    unsigned gen;  /* set by the owner: a new value for each new file, so a
                      backend knows an fd number now names another file */
};

/*
 * How a reactor on a foreign (daemon's) loop reaches the hub: `tick` runs
 * once per loop iteration, before the loop blocks, to run the hub's ready
 * tasks; the wake-up timer armed with timer_set makes the loop iterate (and
 * so tick) at a deadline.  `busy` says whether the hub still has work (tasks
 * alive, or the thread's own context blocked in a call): while it does, the
 * backend holds a reference on the loop so the daemon's ev_run does not
 * return.  In standalone mode neither is used.
 */
struct usock__reactor_hooks {
    void (*tick)(void *owner);
    int (*busy)(void *owner);
    void *owner;
};

struct usock__reactor {
    const struct usock__reactor_ops *ops;
    struct usock__reactor_hooks hooks;
    void *impl; /* backend state */
    const void *hint; /* while a readiness callback runs: the backend's
                         record of that fd, which the woken task's next
                         io_set touches (the hub prefetches it); else NULL */
    int dirty;        /* set by a backend whose watch changes reach the
                         kernel (and so wait_fd) only in its next pass */
};

struct usock__reactor_ops {
    const char *name; /* "poll" or "ev" */

    /* Set up r (r->ops and r->hooks are already filled in).  foreign_loop
     * is a struct ev_loop * for the ev backend, or NULL.  0, or -1 with
     * errno (ENOMEM, EMFILE, ENOTSUP for a foreign loop on poll). */
    int (*init)(struct usock__reactor *r, void *foreign_loop);

    /* Free everything init made (never the foreign loop). */
    void (*destroy)(struct usock__reactor *r);

    /* Watch fd for the absolute mask `events` (USOCK__IN|USOCK__OUT) with w;
     * 0 stops watching.  Cheap when nothing changes; changes may be applied
     * lazily, before the next wait.  w replaces any other watcher of fd.
     * 0, or -1 with errno (ENOMEM). */
    int (*io_set)(struct usock__reactor *r, struct usock__io *w, int fd,
                  int events);

    /* Forget everything about fd: called before close(2).  No callback for
     * fd is made afterwards, even for events already collected. */
    void (*io_forget)(struct usock__reactor *r, int fd);

    /* Arm the single wake-up timer of a reactor driven by a foreign loop:
     * hooks.tick runs at or after `deadline` (USOCK__NEVER disarms).  In
     * standalone mode the deadline is given to run_once instead. */
    void (*timer_set)(struct usock__reactor *r, int64_t deadline);

    /* Thread-safe: make a blocked run_once (or the foreign loop) return. */
    void (*wakeup)(struct usock__reactor *r);

    /* Wait for events until `deadline` (0: do not block; USOCK__NEVER: no
     * limit), dispatch their callbacks, return.  Returns the number of
     * callbacks made, or -1 with errno (EINTR is not an error: 0). */
    int (*run_once)(struct usock__reactor *r, int64_t deadline);

    /* For a loop that is not libev (usock_hub_fd): a descriptor that is
     * readable while run_once(r, 0) has events to take in or a wakeup
     * came, and not otherwise once run_once(r, 0) has applied the watches
     * set since the last pass.  Its number stays the same while r lives.
     * Made on the first call; -1 with errno (ENOTSUP: this backend, or a
     * foreign loop, cannot give one; EMFILE ...).  NULL: not supported. */
    int (*wait_fd)(struct usock__reactor *r);
};

USOCK__HIDDEN extern const struct usock__reactor_ops usock__reactor_poll;
#ifdef HAVE_LIBEV
USOCK__HIDDEN extern const struct usock__reactor_ops usock__reactor_ev;
#endif
#ifdef HAVE_EPOLL
USOCK__HIDDEN extern const struct usock__reactor_ops usock__reactor_epoll;
#endif

/* The backend named by $USOCKET_REACTOR ("ev", "poll" or "epoll"; default
 * epoll on Linux, else ev when built with libev, else poll), or NULL with
 * errno ENOTSUP for an unknown or unbuilt name.  Read each time it is
 * called.  _ev: the backend of a hub embedded in a libev loop (ev, unless
 * the variable names another). */
USOCK__HIDDEN const struct usock__reactor_ops *usock__reactor_pick(void);
USOCK__HIDDEN const struct usock__reactor_ops *usock__reactor_pick_ev(void);

/* Monotonic nanoseconds. */
USOCK__HIDDEN int64_t usock__clock_ns(void);

/* Milliseconds to wait for poll(2)/epoll from now until deadline, rounded
 * up so a wait never ends early: -1 for USOCK__NEVER, 0 when past. */
USOCK__HIDDEN int usock__ms_until(int64_t deadline);

/*
 * Allocation for the whole library (src/ and reactor/), with a test hook:
 * usock__alloc_fail_in(n) makes the n-th allocation from now fail with
 * ENOMEM (1: the next one), once; 0 disarms it.  usock__alloc_fail_left()
 * is what is left of the count (0 once the failure was injected).
 */
#include <stddef.h>
USOCK__HIDDEN void *usock__malloc(size_t n);
USOCK__HIDDEN void *usock__calloc(size_t k, size_t n);
USOCK__HIDDEN void *usock__realloc(void *p, size_t n);
USOCK__HIDDEN int usock__memalign(void **p, size_t align, size_t n);
USOCK__HIDDEN void usock__alloc_fail_in(long n);
USOCK__HIDDEN long usock__alloc_fail_left(void);

#endif /* USOCKET_REACTOR_H */
