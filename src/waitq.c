/*
 * Wait queues for conditions and channels: waiting (a task on its hub, or a
 * plain thread on a condvar), waking across hubs, and the object's
 * reference count.  See waitq.h for the picture.
 */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <time.h>

#include "internal.h"
#include "waitq.h"

int usock__sync_init(struct usock__sync *o,
                     void (*destroy)(struct usock__sync *))
{
    int e = pthread_mutex_init(&o->lock, NULL);

    if (e) {
        return usock__fail(e);
    }
    o->refs = 1;
    o->destroy = destroy;
    return 0;
}

void usock__sync_unref(struct usock__sync *o)
{
    if (__atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        pthread_mutex_destroy(&o->lock);
        o->destroy(o);
    }
}

int64_t usock__sync_timeout(double timeout)
{
    int64_t ns = usock__seconds_to_ns(timeout);

    return ns == -1 ? -2 : ns == -2 ? -1 : ns;
}

int usock__sync_may_wait(int64_t timeout_ns, int64_t *dl)
{
    *dl = usock__deadline(timeout_ns);
    if (*dl == 0) {
        return EAGAIN;
    }
    return usock__cancelled() ? ECANCELED : 0;
}

/* ------------------------------------------------------------------------ */
/*  The FIFO (under the object's lock)                                      */
/* ------------------------------------------------------------------------ */

static void q_push(struct usock__waitq *q, struct usock__qwait *w)
{
    w->next = NULL;
    if (q->tail) {
        q->tail->next = w;
    } else {
        q->head = w;
    }
    q->tail = w;
}

static void q_remove(struct usock__waitq *q, struct usock__qwait *w)
{
    struct usock__qwait **p = &q->head, *prev = NULL;

    while (*p && *p != w) {
        prev = *p;
        p = &(*p)->next;
    }
    if (*p) {
        *p = w->next;
        if (q->tail == w) {
            q->tail = prev;
        }
    }
}

/* ------------------------------------------------------------------------ */
/*  Waking                                                                  */
/* ------------------------------------------------------------------------ */

/* On the waiter's hub, from its inbox: the waker's message arrived. */
static void remote_wake(void *arg)
{
    struct usock__qwait *w = arg;

    if (!usock__tls_hub) {
        return; /* the hub is being destroyed: the waiter's stack is gone */
    }
    w->arrived = 1;
    if (w->base.task->wait == &w->base) {
        w->base.unlink = NULL;
        usock__wake(&w->base, 0);
    }
}

/* Wake w (taken out of its FIFO, marked DONE).  0, or 1 when w's hub is
 * exiting (w is then GONE and the caller tries the next waiter). */
static int wake_one(struct usock__qwait *w)
{
    if (!w->hub) {
        pthread_cond_signal(&w->cv);
        return 0;
    }
    if (w->hub == usock__tls_hub) {
        w->arrived = 1;
        w->base.unlink = NULL;
        usock__wake(&w->base, 0);
        return 0;
    }
    /* The message cannot be lost once sent, and w cannot leave before it
     * runs.  Out of memory: try again (a waker has no way to fail here
     * without losing a hand-off it already made). */
    while (usock__hub_send(w->hub, remote_wake, w) < 0) {
        if (errno == ESHUTDOWN) {
            w->state = USOCK__QW_GONE;
            return 1;
        }
        sched_yield();
    }
    return 0;
}

int usock__waitq_wake(struct usock__waitq *q, int result,
                      void (*fill)(struct usock__qwait *w, void *arg),
                      void *arg)
{
    struct usock__qwait *w;

    while ((w = q->head) != NULL) {
        q->head = w->next;
        if (!q->head) {
            q->tail = NULL;
        }
        if (fill) {
            fill(w, arg);
        }
        w->state = USOCK__QW_DONE;
        w->result = result;
        if (wake_one(w) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  Waiting                                                                 */
/* ------------------------------------------------------------------------ */

/* A waiting task's timer, cancel or hub exit ended its wait: take it out
 * of the FIFO unless a waker took it first. */
static void qwait_unlink(struct usock__wait *bw)
{
    struct usock__qwait *w = container_of(bw, struct usock__qwait, base);

    pthread_mutex_lock(&w->obj->lock);
    if (w->state == USOCK__QW_WAITING) {
        q_remove(w->q, w);
        w->state = USOCK__QW_GONE;
    }
    pthread_mutex_unlock(&w->obj->lock);
}

/* A thread with no reactor: block on a condvar of our own (lock held). */
static int wait_plain(struct usock__sync *o, struct usock__qwait *w,
                      int64_t dl)
{
    pthread_condattr_t a;
    int r = 0;

    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &a);
    pthread_condattr_destroy(&a);
    w->hub = NULL;
    q_push(w->q, w);
    while (w->state == USOCK__QW_WAITING && r != ETIMEDOUT) {
        if (dl == USOCK__NEVER) {
            pthread_cond_wait(&w->cv, &o->lock);
        } else {
            struct timespec ts = {.tv_sec = dl / 1000000000,
                                  .tv_nsec = dl % 1000000000};
            r = pthread_cond_timedwait(&w->cv, &o->lock, &ts);
        }
    }
    if (w->state == USOCK__QW_WAITING) {
        q_remove(w->q, w);
        w->state = USOCK__QW_GONE;
        w->result = ETIMEDOUT;
    }
    pthread_cond_destroy(&w->cv);
    return w->result;
}

/* A task: park on the hub (lock released first). */
static int wait_task(struct usock_hub *h, struct usock__sync *o,
                     struct usock__qwait *w, int64_t dl)
{
    w->hub = h;
    w->base.unlink = qwait_unlink;
    w->base.owner = o;
    q_push(w->q, w);
    pthread_mutex_unlock(&o->lock);
    int r = usock__park(h, &w->base, dl);
    /* r != 0: our timer or a cancel ended the park, and qwait_unlink (on
     * this thread, under the lock) saw whether a waker had been first. */
    if (r != 0 && w->state != USOCK__QW_DONE) {
        return r;
    }
    while (!w->arrived) {
        /* Taken by a waker on another hub, whose message is on its way:
         * it points at w, so wait for it whatever else happens. */
        w->base.unlink = NULL;
        usock__park(h, &w->base, USOCK__NEVER);
    }
    return w->result;
}

int usock__sync_wait(struct usock__sync *o, struct usock__waitq *q,
                     struct usock__qwait *w, int64_t dl)
{
    struct usock_hub *h = usock__tls_hub;
    int r;

    w->obj = o;
    w->q = q;
    w->state = USOCK__QW_WAITING;
    w->result = 0;
    w->arrived = 0;
    __atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED);
    if (h && h->has_reactor) {
        r = wait_task(h, o, w, dl);
    } else {
        r = wait_plain(o, w, dl);
        pthread_mutex_unlock(&o->lock);
    }
    usock__sync_unref(o);
    return r;
}
