/*
 * What the backends share: choosing one at run time, and the monotonic
 * clock with its conversion to a poll(2) timeout.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reactor.h"

#define NS_PER_MS 1000000

/* The backend used when $USOCKET_REACTOR is unset or empty: epoll on Linux
 * (measured the fastest at 100 to 10,000 connections and in bulk transfers:
 * bench/RESULTS.md), else libev when built with it, else poll. */
static const struct usock__reactor_ops *default_ops(void)
{
#if defined(HAVE_EPOLL)
    return &usock__reactor_epoll;
#elif defined(HAVE_LIBEV)
    return &usock__reactor_ev;
#else
    return &usock__reactor_poll;
#endif
}

/* The backend named by $USOCKET_REACTOR, read at each call: "ev", "poll",
 * "epoll", or unset/empty for the default (epoll on Linux, else ev when
 * built with libev, else poll).  NULL with errno ENOTSUP for any other name, or for "ev" without
 * libev, or "epoll" where there is no epoll (not Linux). */
const struct usock__reactor_ops *usock__reactor_pick(void)
{
    const char *name = getenv("USOCKET_REACTOR");

    if (name == NULL || name[0] == '\0') {
        return default_ops();
    }
    if (strcmp(name, "poll") == 0) {
        return &usock__reactor_poll;
    }
#ifdef HAVE_LIBEV
    if (strcmp(name, "ev") == 0) {
        return &usock__reactor_ev;
    }
#endif
#ifdef HAVE_EPOLL
    if (strcmp(name, "epoll") == 0) {
        return &usock__reactor_epoll;
    }
#endif
    errno = ENOTSUP;
    return NULL;
}

/* The backend for a hub run by a daemon's libev loop: ev whatever the
 * default, unless $USOCKET_REACTOR names another one.  NULL with errno
 * ENOTSUP without libev or when another backend is named. */
const struct usock__reactor_ops *usock__reactor_pick_ev(void)
{
#ifdef HAVE_LIBEV
    const char *name = getenv("USOCKET_REACTOR");

    if (name == NULL || name[0] == '\0' || strcmp(name, "ev") == 0) {
        return &usock__reactor_ev;
    }
#endif
    errno = ENOTSUP;
    return NULL;
}

/* Nanoseconds on CLOCK_MONOTONIC, which never jumps with the wall clock. */
int64_t usock__clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds from now until deadline, rounded up so that a poll(2) with
 * this timeout never returns before the deadline: -1 for USOCK__NEVER, 0
 * when the deadline has passed, at most INT_MAX. */
int usock__ms_until(int64_t deadline)
{
    int64_t now, left, ms;

    if (deadline == USOCK__NEVER) {
        return -1;
    }
    now = usock__clock_ns();
    if (deadline <= now) {
        return 0;
    }
    left = deadline - now;
    ms = left / NS_PER_MS + (left % NS_PER_MS != 0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ------------------------------------------------------------------------ */
/*  Allocation, with the test hook of reactor.h                             */
/* ------------------------------------------------------------------------ */

static long alloc_countdown; /* atomic: > 0 while a failure is armed */

void usock__alloc_fail_in(long n)
{
    __atomic_store_n(&alloc_countdown, n > 0 ? n : 0, __ATOMIC_SEQ_CST);
}

long usock__alloc_fail_left(void)
{
    return __atomic_load_n(&alloc_countdown, __ATOMIC_SEQ_CST);
}

/* 1 when this allocation is the one the test hook fails. */
static int injected(void)
{
    long c = __atomic_load_n(&alloc_countdown, __ATOMIC_RELAXED);

    while (c > 0) {
        if (__atomic_compare_exchange_n(&alloc_countdown, &c, c - 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            if (c == 1) {
                errno = ENOMEM;
                return 1;
            }
            return 0;
        }
    }
    return 0;
}

void *usock__malloc(size_t n)
{
    return injected() ? NULL : malloc(n);
}

void *usock__calloc(size_t k, size_t n)
{
    return injected() ? NULL : calloc(k, n);
}

void *usock__realloc(void *p, size_t n)
{
    return injected() ? NULL : realloc(p, n);
}

int usock__memalign(void **p, size_t align, size_t n)
{
    return injected() ? ENOMEM : posix_memalign(p, align, n);
}
