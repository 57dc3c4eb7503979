/*
 * Timeouts and deadlines, and the clock they are read on.
 *
 *   seconds (API, double)  ──usock__seconds_to_ns──▶  ns (int64_t)
 *   socket timeout: s->timeout (from usock_getdefaulttimeout when made)
 *   task deadline:  task->deadline (usock_setdeadline), absolute ns
 *   one blocking call: usock__deadline(timeout) = the earlier of now +
 *   timeout and the task's deadline, computed once, at its first wait
 *
 * Times inside are CLOCK_MONOTONIC nanoseconds (usock__clock_ns, reactor.c);
 * USOCK__NEVER is no deadline, -1 no timeout, 0 non-blocking.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#include <usocket.h>

#include "internal.h"

int64_t usock__default_timeout_ns = -1; /* atomic: __atomic builtins */

/* ------------------------------------------------------------------------ */
/*  Seconds and nanoseconds, the clock                                      */
/* ------------------------------------------------------------------------ */

/* seconds * 1e9, rounded up (without libm). */
static int64_t ceil_ns(double seconds)
{
    double x = seconds * 1e9;
    int64_t ns = (int64_t)x;
    return (double)ns < x ? ns + 1 : ns;
}

int64_t usock__seconds_to_ns(double seconds)
{
    if (seconds == USOCK_NONE) {
        return -2;
    }
    if (isnan(seconds) || isinf(seconds) || seconds < 0) {
        return -1;
    }
    /* About 292 years is the most an int64_t of ns can hold: clamp to 100
     * years.  Round up so a positive timeout never becomes 0. */
    if (seconds > 3.15e9) {
        return (int64_t)3.15e18;
    }
    int64_t ns = ceil_ns(seconds);
    return (ns == 0 && seconds > 0) ? 1 : ns;
}

double usock_now(void)
{
    return (double)usock__clock_ns() / 1e9;
}

void usock__sleep_until(int64_t until)
{
    struct timespec ts = {.tv_sec = until / 1000000000,
                          .tv_nsec = until % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
           EINTR) {
    }
}

/* ------------------------------------------------------------------------ */
/*  Deadlines                                                               */
/* ------------------------------------------------------------------------ */

int64_t usock__deadline(int64_t timeout_ns)
{
    struct usock_hub *h = usock__tls_hub;
    int64_t d = USOCK__NEVER;

    if (timeout_ns == 0) {
        return 0;
    }
    if (timeout_ns > 0) {
        d = usock__clock_ns() + timeout_ns;
    }
    if (h && h->current->deadline < d) {
        d = h->current->deadline;
    }
    return d < 1 ? 1 : d;
}

double usock_setdeadline(double when)
{
    struct usock_hub *h = usock__hub_get();
    double prev;
    int64_t d;

    if (!h) {
        return USOCK_NONE;
    }
    d = h->current->deadline;
    prev = d == USOCK__NEVER ? USOCK_NONE : (double)d / 1e9;
    if (when == USOCK_NONE || isnan(when) || isinf(when)) {
        h->current->deadline = USOCK__NEVER;
    } else if (when <= 0) {
        h->current->deadline = 1;
    } else {
        h->current->deadline = when > 9.2e9 ? USOCK__NEVER
                                            : ceil_ns(when);
    }
    return prev;
}

/* ------------------------------------------------------------------------ */
/*  Timeouts                                                                */
/* ------------------------------------------------------------------------ */

void usock_setdefaulttimeout(double seconds)
{
    int64_t ns = usock__seconds_to_ns(seconds);
    if (ns != -1) {
        __atomic_store_n(&usock__default_timeout_ns, ns == -2 ? -1 : ns,
                         __ATOMIC_SEQ_CST);
    }
}

double usock_getdefaulttimeout(void)
{
    int64_t ns = usock__default_timeout();
    return ns < 0 ? USOCK_NONE : (double)ns / 1e9;
}

int usock_settimeout(usock_t *s, double seconds)
{
    int64_t ns = usock__seconds_to_ns(seconds);

    if (!s || ns == -1) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    s->timeout = ns == -2 ? -1 : ns;
    return 0;
}

double usock_gettimeout(const usock_t *s)
{
    if (!s) {
        errno = EINVAL;
        return USOCK_NONE;
    }
    return s->timeout < 0 ? USOCK_NONE : (double)s->timeout / 1e9;
}

int usock_setblocking(usock_t *s, int flag)
{
    return usock_settimeout(s, flag ? USOCK_NONE : 0.0);
}
