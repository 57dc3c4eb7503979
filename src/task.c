/*
 * Tasks: ids, spawn, join, cancel, sleep, yield, run.  Deadlines and
 * timeouts are in deadline.c.
 *
 * A spawned task lives at the top of its own stack, so spawning costs one
 * cached stack and no other allocation:
 *
 *   stack.lo                                         stack.lo + stack.size
 *   | guard | usable stack, grows down ◀────────────  | struct usock__task |
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include <usocket.h>

#include "hub.h"

static atomic_size_t stack_size = USOCK__STACK_DEFAULT;
static atomic_size_t max_tasks; /* per hub; 0: no cap */

/* ------------------------------------------------------------------------ */
/*  Task ids                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Ids are unique across hubs and say which hub issued them, so join and
 * cancel can tell another hub's task (EXDEV) from a finished one of ours
 * and from an id never issued (ESRCH).  A hub takes ids in ranges from one
 * process-wide counter (16 ids first, doubling up to 65,536); the table of
 * ranges, in increasing order, says which hub owns every issued id.  Only
 * a range's start goes in it, and one entry covers consecutive ranges of
 * one hub.
 *
 *   ranges: { 1, hub 1 } { 17, hub 2 } { 33, hub 1 } ...    next_start
 */
struct range {
    int start;
    unsigned hub; /* usock_hub.serial */
};

static pthread_mutex_t ids_lock = PTHREAD_MUTEX_INITIALIZER;
static struct range *ranges; /* under ids_lock */
static size_t nranges, capranges;
static int next_start = 1;   /* the first id of no range yet */
static unsigned serials;     /* hub serial numbers issued */

#define RANGE_FIRST 16
#define RANGE_MAX 65536

int usock__task_id(struct usock_hub *h)
{
    if (likely(h->id_next < h->id_end)) {
        return h->id_next++;
    }
    int want = h->id_grab ? h->id_grab * 2 : RANGE_FIRST;
    if (want > RANGE_MAX) {
        want = RANGE_MAX;
    }
    pthread_mutex_lock(&ids_lock);
    if (h->serial == 0) {
        h->serial = ++serials;
    }
    if (INT_MAX - next_start < want) {
        pthread_mutex_unlock(&ids_lock);
        errno = EAGAIN; /* every int id was issued */
        return -1;
    }
    if (nranges == 0 || ranges[nranges - 1].hub != h->serial) {
        if (nranges == capranges) {
            size_t cap = capranges ? capranges * 2 : 64;
            struct range *r = usock__realloc(ranges, cap * sizeof(*r));
            if (!r) {
                pthread_mutex_unlock(&ids_lock);
                errno = ENOMEM;
                return -1;
            }
            ranges = r;
            capranges = cap;
        }
        ranges[nranges].start = next_start;
        ranges[nranges].hub = h->serial;
        nranges++;
    }
    h->id_next = next_start;
    h->id_end = next_start + want;
    next_start += want;
    pthread_mutex_unlock(&ids_lock);
    h->id_grab = want;
    return h->id_next++;
}

void usock__task_ids_lock(int lock)
{
    if (lock) {
        pthread_mutex_lock(&ids_lock);
    } else {
        pthread_mutex_unlock(&ids_lock);
    }
}

/* Who issued id: 1 hub h, -1 another hub, 0 nobody (never issued). */
static int task_owner(const struct usock_hub *h, int id)
{
    if (id <= 0) {
        return 0;
    }
    if (id >= h->id_end - h->id_grab && id < h->id_end) {
        return id < h->id_next ? 1 : 0; /* our current range */
    }
    pthread_mutex_lock(&ids_lock);
    int own = 0;
    if (id < next_start) {
        size_t lo = 0, hi = nranges; /* the last range starting <= id */
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (ranges[mid].start <= id) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        own = ranges[lo].hub == h->serial ? 1 : -1;
    }
    pthread_mutex_unlock(&ids_lock);
    return own;
}

/*
 * The hub's table of its spawned tasks (h->ids, a hash table id -> task
 * chained through task->hnext; h->ntasks counts them): added at spawn,
 * taken out when the task finishes.  The hub walks it only through
 * usock__tasks_wake and usock__tasks_release.
 */
static size_t id_slot(const struct usock_hub *h, int id)
{
    return ((size_t)id * 0x9E3779B1u) & h->ids_mask;
}

static int ids_grow(struct usock_hub *h)
{
    size_t n = h->ids ? (h->ids_mask + 1) * 2 : 64;
    struct usock__task **t =
        usock__calloc(n, sizeof(struct usock__task *));
    size_t old = h->ids ? h->ids_mask + 1 : 0;

    if (!t) {
        return -1;
    }
    struct usock__task **prev = h->ids;
    h->ids = t;
    h->ids_mask = n - 1;
    for (size_t i = 0; i < old; i++) {
        struct usock__task *e = prev[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            size_t j = id_slot(h, e->id);
            e->hnext = h->ids[j];
            h->ids[j] = e;
        }
    }
    free(prev);
    return 0;
}

static int ids_add(struct usock_hub *h, struct usock__task *t)
{
    if ((!h->ids || h->ntasks + 1 > h->ids_mask + 1) && ids_grow(h) < 0) {
        return -1;
    }
    size_t j = id_slot(h, t->id);
    t->hnext = h->ids[j];
    h->ids[j] = t;
    h->ntasks++;
    return 0;
}

static void ids_del(struct usock_hub *h, struct usock__task *t)
{
    struct usock__task **p = &h->ids[id_slot(h, t->id)];
    while (*p != t) {
        p = &(*p)->hnext;
    }
    *p = t->hnext;
    h->ntasks--;
}

/* The task with this id on hub h (the thread's own context included), or
 * NULL. */
static struct usock__task *task_find(struct usock_hub *h, int id)
{
    if (h->current->id == id) {
        return h->current;
    }
    if (h->main.id == id) {
        return &h->main;
    }
    if (!h->ids) {
        return NULL;
    }
    struct usock__task *t = h->ids[id_slot(h, id)];
    while (t && t->id != id) {
        t = t->hnext;
    }
    return t;
}

void usock__tasks_wake(struct usock_hub *h, int e, int cancel)
{
    for (size_t i = 0; h->ids && i <= h->ids_mask; i++) {
        for (struct usock__task *t = h->ids[i]; t; t = t->hnext) {
            if (cancel) {
                t->cancelled = 1;
            }
            if (t->wait) {
                usock__wake(t->wait, e);
            }
        }
    }
}

void usock__tasks_release(struct usock_hub *h, struct usock__task *keep)
{
    for (size_t i = 0; h->ids && i <= h->ids_mask; i++) {
        struct usock__task *t = h->ids[i], *next;
        for (; t; t = next) {
            next = t->hnext;
            /* Sockets must not keep pointers into the freed stack. */
            if (t->wait && t->wait->unlink) {
                t->wait->unlink(t->wait);
            }
            if (t != keep) {
                usock__task_free(t);
            }
        }
    }
    if (keep == NULL) {
        free(h->ids);
        h->ids = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/*  Spawn and finish                                                        */
/* ------------------------------------------------------------------------ */

static void task_main(void *arg)
{
    struct usock__task *t = arg;
    struct usock_hub *h = t->hub;

    usock__asan_arrive(NULL);
    /* A task that finished just before us left its stack to release. */
    usock__hub_reap(h);
    t->fn(t->arg);

    /* Finished: wake the joiners and a waiting usock_run, then leave. */
    while (t->joiners) {
        usock__wake(t->joiners, 0);
    }
    ids_del(h, t);
    if (h->ntasks == 0 && h->run_waiter) {
        usock__wake(h->run_waiter, 0);
    }
    usock__hub_exit(h);
}

void usock__task_free(struct usock__task *t)
{
    if (t->tsan) {
        usock__tsan_free(t->tsan);
    }
    struct usock__stack st = t->stack;
    usock__stack_put(&st);
}

size_t usock_setmaxtasks(size_t n)
{
    return atomic_exchange(&max_tasks, n);
}

int usock_setstacksize(size_t bytes)
{
    if (bytes < USOCK__STACK_MIN || bytes > USOCK__STACK_MAX) {
        errno = EINVAL;
        return -1;
    }
    atomic_store(&stack_size, bytes);
    return 0;
}

int usock_spawn(void (*fn)(void *arg), void *arg)
{
    struct usock_hub *h = usock__hub_get();
    struct usock__stack st;
    struct usock__task *t;
    size_t room;

    if (!fn) {
        errno = EINVAL;
        return -1;
    }
    if (!h || usock__hub_reactor(h) < 0) {
        return -1;
    }
    size_t cap = atomic_load_explicit(&max_tasks, memory_order_relaxed);
    if (unlikely(cap != 0 && h->ntasks >= cap)) {
        errno = EAGAIN;
        return -1;
    }
    if (usock__stack_get(&st, atomic_load(&stack_size)) < 0) {
        return -1;
    }
    /* The task record sits at the top of the stack, 64-byte aligned. */
    uintptr_t top = (uintptr_t)st.lo + st.size;
    t = (struct usock__task *)((top - sizeof(*t)) & ~(uintptr_t)63);
    room = (size_t)((uintptr_t)t - (uintptr_t)st.lo);
    *t = (struct usock__task){.hub = h, .fn = fn, .arg = arg, .stack = st,
                              .deadline = USOCK__NEVER};
    t->id = usock__task_id(h);
    if (t->id < 0) {
        int e = errno;
        usock__stack_put(&st);
        errno = e;
        return -1;
    }
    t->cancelled = (unsigned char)__atomic_load_n(&h->shutdown,
                                                  __ATOMIC_ACQUIRE);
    if (ids_add(h, t) < 0) {
        usock__stack_put(&st);
        errno = ENOMEM;
        return -1;
    }
    t->tsan = usock__tsan_new();
    t->stack_lo = st.lo;
    t->stack_len = room;
    usock__ctx_make(&t->ctx, st.lo, room, task_main, t);
    usock__ready(h, t);
    return t->id;
}

/* ------------------------------------------------------------------------ */
/*  Join, cancel                                                            */
/* ------------------------------------------------------------------------ */

static void join_unlink(struct usock__wait *w)
{
    struct usock__task *t = w->owner;
    struct usock__wait **p = &t->joiners;
    while (*p && *p != w) {
        p = &(*p)->next;
    }
    if (*p) {
        *p = w->next;
    }
}

int usock_join(int id, double timeout)
{
    struct usock_hub *h = usock__hub_get();
    int64_t ns = usock__seconds_to_ns(timeout);
    struct usock__task *t;
    struct usock__wait w = {0};

    if (!h || ns == -1) {
        return usock__fail(h ? EINVAL : ENOMEM);
    }
    int own = task_owner(h, id);
    if (own <= 0) {
        /* Never issued, or another hub's task (DESIGN "Lifetimes across
         * threads"): whatever the timeout. */
        return usock__fail(own == 0 ? ESRCH : EXDEV);
    }
    if (h->current->cancelled) {
        return usock__fail(ECANCELED);
    }
    t = task_find(h, id);
    if (t == h->current) {
        return usock__fail(EDEADLK);
    }
    if (!t || t == &h->main) {
        /* Finished (or the thread's own context, which never finishes
         * while a task runs on it: treat it as not joinable). */
        return t ? usock__fail(EDEADLK) : 0;
    }
    int64_t dl = usock__deadline(ns == -2 ? -1 : ns);
    if (dl == 0) {
        return usock__fail(ETIMEDOUT);
    }
    w.unlink = join_unlink;
    w.owner = t;
    w.next = t->joiners;
    t->joiners = &w;
    int r = usock__park(h, &w, dl);
    return r ? usock__fail(r) : 0;
}

int usock_cancel(int id)
{
    struct usock_hub *h = usock__hub_get();
    struct usock__task *t;

    if (!h) {
        return -1;
    }
    int own = task_owner(h, id);
    if (own <= 0) {
        return usock__fail(own == 0 ? ESRCH : EXDEV);
    }
    t = task_find(h, id);
    if (!t) {
        return 0; /* already finished */
    }
    t->cancelled = 1;
    if (t->wait) {
        usock__wake(t->wait, ECANCELED);
    }
    return 0;
}

int usock_self(void)
{
    struct usock_hub *h = usock__hub_get();
    return h ? h->current->id : -1;
}

/* ------------------------------------------------------------------------ */
/*  Sleep, yield, run                                                       */
/* ------------------------------------------------------------------------ */

int usock_sleep(double seconds)
{
    struct usock_hub *h = usock__hub_get();
    int64_t ns = usock__seconds_to_ns(seconds);
    struct usock__wait w = {0};

    if (!h) {
        return -1;
    }
    if (ns < 0) {
        return usock__fail(EINVAL);
    }
    if (h->current->cancelled) {
        return usock__fail(ECANCELED);
    }
    if (ns == 0) {
        return usock_yield();
    }
    int64_t until = usock__clock_ns() + ns;
    int64_t dl = usock__deadline(ns);
    if (!h->has_reactor) {
        usock__sleep_until(dl);
    } else {
        int r = usock__park(h, &w, dl);
        if (r != ETIMEDOUT) {
            return usock__fail(r); /* ENOMEM (no timer), ECANCELED */
        }
    }
    /* The timer fired: the sleep is over, unless the task deadline cut it
     * short. */
    return dl < until ? usock__fail(ETIMEDOUT) : 0;
}

int usock_yield(void)
{
    struct usock_hub *h = usock__hub_get();

    if (!h) {
        return -1;
    }
    if (h->current->cancelled) {
        return usock__fail(ECANCELED);
    }
    if (!h->has_reactor) {
        return 0;
    }
    usock__ready(h, h->current);
    usock__hub_block(h);
    return 0;
}

static void run_unlink(struct usock__wait *w)
{
    w->task->hub->run_waiter = NULL;
}

int usock_run(void)
{
    struct usock_hub *h = usock__hub_get();
    struct usock__wait w = {0};

    if (!h) {
        return -1;
    }
    if (h->current != &h->main || h->run_waiter) {
        return usock__fail(EDEADLK);
    }
    while (h->ntasks > 0 || h->deferred) {
        if (h->current->cancelled) {
            return usock__fail(ECANCELED);
        }
        if (h->ntasks == 0) {
            /* Only posts waiting to be spawned again: wait for that. */
            int64_t dl = usock__deadline(-1), until = h->retry_at;
            w.unlink = NULL;
            if (dl < until) {
                until = dl;
            }
            int r = usock__park(h, &w, until);
            if (r != ETIMEDOUT || until == dl) {
                return usock__fail(r);
            }
            continue;
        }
        w.unlink = run_unlink;
        h->run_waiter = &w;
        int r = usock__park(h, &w, usock__deadline(-1));
        if (r) {
            return usock__fail(r);
        }
    }
    return 0;
}
