/*
 * The hub's cross-thread inbox and the posting API: other threads (posts,
 * resolver workers, remote wakes of conditions and channels, closes of a
 * socket registered elsewhere) hand the hub work; it runs on the hub's own
 * thread, in its loop (usock__inbox_run, hub.c and embed.c).
 *
 *   any thread                     h->lock            hub's thread
 *   usock__hub_send(h, fn, arg) ──▶ h->inbox (LIFO) ──▶ usock__inbox_run:
 *     then reactor wakeup()                             reversed, fn(arg)
 *   usock_hub_post(h, fn, arg)  ──▶ post_spawn ──────▶ usock_spawn(fn, arg),
 *                                                       or h->deferred,
 *                                                       retried later
 *
 * The same lock counts the hub's holders (h->jobs: resolver workers in
 * flight, sockets whose watcher is registered on h), so whichever of the
 * thread and its last holder is done last frees h (hub_destroy, hub.c).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include <usocket.h>

#include "hub.h"
#include "internal.h"

/* A unit of work handed to a hub from another thread (usock_hub_post,
 * resolver completions).  fn runs on the hub's thread, in its loop. */
struct usock__inbox_item {
    void (*fn)(void *arg);
    void *arg;
    struct usock__inbox_item *next;
};

/* ------------------------------------------------------------------------ */
/*  The inbox                                                               */
/* ------------------------------------------------------------------------ */

void usock__inbox_take(struct usock_hub *h)
{
    struct usock__inbox_item *it, *next;

    pthread_mutex_lock(&h->lock);
    it = h->inbox;
    __atomic_store_n(&h->inbox, NULL, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&h->lock);
    /* The list is in reverse order of sending: restore it. */
    struct usock__inbox_item *rev = NULL;
    for (; it; it = next) {
        next = it->next;
        it->next = rev;
        rev = it;
    }
    for (it = rev; it; it = next) {
        next = it->next;
        it->fn(it->arg);
        free(it);
    }
}

void usock__inbox_drop(struct usock_hub *h)
{
    struct usock__inbox_item *it, *next;

    for (it = h->inbox; it; it = next) {
        next = it->next;
        free(it); /* posts and resolver results of the parent's hub */
    }
    h->inbox = NULL; /* forked from a task, the hub is still looked at */
}

/* ------------------------------------------------------------------------ */
/*  Sending, and the hub's holders                                          */
/* ------------------------------------------------------------------------ */

/*
 * Queue fn(arg) in h's inbox and wake h; with `job`, also end one of h's
 * workers (usock__hub_job_start), unless out of memory (the worker tries
 * again).  0, or -1 with errno ENOMEM or ESHUTDOWN (h's thread has exited;
 * then the last of the thread and its workers frees h).  The wake-up
 * happens under the lock, so the thread cannot destroy its reactor
 * meanwhile (hub_destroy marks the hub dead under the lock first).
 */
/* Under h's lock: one job of h ends; 1 when it was the last thing keeping
 * a dead hub (its thread gone) alive, which the caller then frees with
 * free_dead() after unlocking. */
static int job_end(struct usock_hub *h)
{
    h->jobs--;
    return h->dead == 2 && h->jobs == 0;
}

static void free_dead(struct usock_hub *h)
{
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static int hub_put(struct usock_hub *h, void (*fn)(void *), void *arg,
                   int job)
{
    struct usock__inbox_item *it;
    int e = 0, last = 0;

    if (usock__hub_foreign(h)) {
        errno = ESHUTDOWN; /* its thread is in the parent only */
        return -1;
    }
    it = usock__malloc(sizeof(*it));
    pthread_mutex_lock(&h->lock);
    if (h->dead) {
        e = ESHUTDOWN;
    } else if (!it) {
        e = ENOMEM;
    } else {
        it->fn = fn;
        it->arg = arg;
        it->next = h->inbox;
        __atomic_store_n(&h->inbox, it, __ATOMIC_RELEASE);
        h->reactor.ops->wakeup(&h->reactor);
    }
    if (job && e != ENOMEM) {
        last = job_end(h);
    }
    pthread_mutex_unlock(&h->lock);
    if (last) {
        free_dead(h);
    }
    if (e) {
        free(it);
        errno = e;
        return -1;
    }
    return 0;
}

int usock__hub_send(struct usock_hub *h, void (*fn)(void *), void *arg)
{
    return hub_put(h, fn, arg, 0);
}

void usock__hub_hold(struct usock_hub *h)
{
    usock__hub_job_start(h);
}

void usock__hub_release(struct usock_hub *h)
{
    int last;

    if (usock__hub_foreign(h)) {
        return; /* the parent's thread owns it (a socket inherited) */
    }
    pthread_mutex_lock(&h->lock);
    last = job_end(h);
    pthread_mutex_unlock(&h->lock);
    if (last) {
        free_dead(h);
    }
}

void usock__hub_job_start(struct usock_hub *h)
{
    pthread_mutex_lock(&h->lock);
    h->jobs++;
    pthread_mutex_unlock(&h->lock);
}

void usock__hub_job_cancel(struct usock_hub *h)
{
    pthread_mutex_lock(&h->lock);
    h->jobs--;
    pthread_mutex_unlock(&h->lock);
}

int usock__hub_job_done(struct usock_hub *h, void (*fn)(void *), void *arg)
{
    if (hub_put(h, fn, arg, 1) < 0) {
        return errno == ESHUTDOWN ? 1 : -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  Posts                                                                   */
/* ------------------------------------------------------------------------ */

struct post {
    void (*fn)(void *);
    void *arg;
    struct post *next; /* in hub->deferred */
};

/* Keep p at the end of h's deferred posts; the first retry comes in 1 ms,
 * then the gap doubles up to 100 ms while spawning keeps failing. */
static void defer_post(struct usock_hub *h, struct post *p)
{
    struct post **tail = (struct post **)&h->deferred;

    while (*tail) {
        tail = &(*tail)->next;
    }
    p->next = NULL;
    *tail = p;
    if (h->retry_gap == 0) {
        h->retry_gap = 1000000;
        h->retry_at = usock__clock_ns() + h->retry_gap;
    }
}

/* On the hub's thread: start a posted function as a task.  A post that
 * returned 0 runs (DESIGN "Allocation failure"): when the task cannot be
 * spawned now, the post waits in hub->deferred, behind older ones. */
static void post_spawn(void *arg)
{
    struct post *p = arg;
    struct usock_hub *h = usock__tls_hub;

    if (h == NULL) { /* the thread's hub is going away */
        free(p);
        return;
    }
    if (h->deferred == NULL && usock_spawn(p->fn, p->arg) > 0) {
        free(p);
        return;
    }
    defer_post(h, p);
}

void usock__posts_respawn(struct usock_hub *h, int64_t now)
{
    struct post *p;

    while ((p = h->deferred) != NULL) {
        if (usock_spawn(p->fn, p->arg) <= 0) {
            h->retry_gap = h->retry_gap * 2 > 100000000 ? 100000000
                                                        : h->retry_gap * 2;
            h->retry_at = now + h->retry_gap;
            return;
        }
        h->deferred = p->next;
        free(p);
    }
    h->retry_gap = 0;
}

void usock__posts_free(struct usock_hub *h)
{
    struct post *p, *next;

    for (p = h->deferred; p; p = next) {
        next = p->next;
        free(p);
    }
    h->deferred = NULL;
}

int usock_hub_post(usock_hub_t *h, void (*fn)(void *), void *arg)
{
    struct post *p;

    if (!h || !fn) {
        return usock__fail(EINVAL);
    }
    /* A hub of a thread of the parent process (we are a fork child): its
     * thread is not here, so the post could never run. */
    if (__atomic_load_n(&h->shutdown, __ATOMIC_ACQUIRE) ||
        usock__hub_foreign(h)) {
        return usock__fail(ESHUTDOWN);
    }
    p = usock__malloc(sizeof(*p));
    if (!p) {
        return usock__fail(ENOMEM);
    }
    p->fn = fn;
    p->arg = arg;
    if (usock__hub_send(h, post_spawn, p) < 0) {
        free(p);
        return -1;
    }
    return 0;
}
