/*
 * Wait queues shared by conditions and channels (cond.c, chan.c).  Unlike a
 * socket's waiter slots, these objects are thread-safe: tasks of any hub and
 * plain threads may wait on one, so every field below is guarded by the
 * object's mutex.
 *
 *   object (usock_cond / usock_chan)        each waiter's own stack
 *   ┌───────────────────────────┐           ┌───────────────────────────┐
 *   │ struct usock__sync        │           │ struct usock__qwait       │
 *   │   lock (one mutex)        │           │   base: usock__wait ◀─────┼── its
 *   │   refs: 1 + calls inside  │           │     (timer, task, unlink) │  hub
 *   │ struct usock__waitq q ────┼──────────▶│   next ──▶ next waiter …  │
 *   │   head, tail (FIFO)       │           │   item: what to copy      │
 *   └───────────────────────────┘           │   state, result, arrived  │
 *                                           │   hub (NULL: plain thread │
 *                                           │        waiting on cv)     │
 *                                           └───────────────────────────┘
 *
 * A waker takes the oldest waiter out of the FIFO under the lock, copies
 * what the waiter wants, marks it DONE with its result and wakes it:
 *   - same hub as the waker: usock__wake at once (no system call);
 *   - another hub: a message through that hub's inbox (usock__hub_send),
 *     which wakes the task on its own thread; until the message has run
 *     (`arrived`) the waiter does not return, as the message points at it;
 *   - a plain thread: pthread_cond_signal on the waiter's own condvar.
 * A waiter whose timer or cancel fires first takes itself out of the FIFO
 * under the same lock (state GONE): so a hand-off either happens or not,
 * never both, and a timed-out waiter never absorbs a later wake-up.
 *
 * Freeing the object wakes every waiter with EBADF; the memory goes when
 * the last reference does (the object's own, and one per waiting call), so
 * a waiter whose timer fires during the free can still take the lock.
 */
#ifndef USOCKET_WAITQ_H
#define USOCKET_WAITQ_H

#include <pthread.h>
#include <stddef.h>

#include "hub.h"

enum usock__qstate {
    USOCK__QW_WAITING, /* in the FIFO */
    USOCK__QW_DONE,    /* taken by a waker; `result` is the outcome */
    USOCK__QW_GONE     /* took itself out (timeout, cancel, exiting hub) */
};

struct usock__sync {
    pthread_mutex_t lock;
    size_t refs;                             /* atomic */
    void (*destroy)(struct usock__sync *o);  /* frees the object */
};

struct usock__qwait;

struct usock__waitq {
    struct usock__qwait *head, *tail;
};

struct usock__qwait {
    struct usock__wait base;       /* a task's park record */
    struct usock__qwait *next;     /* FIFO link */
    struct usock__sync *obj;
    struct usock__waitq *q;
    void *item;                    /* chan: the item to send / the buffer */
    struct usock_hub *hub;         /* the waiter's hub; NULL: plain thread */
    pthread_cond_t cv;             /* plain thread: signalled under lock */
    int state;                     /* enum usock__qstate */
    int result;                    /* DONE: 0 or an errno value */
    int arrived;                   /* DONE and the wake-up reached us */
};

/* Set up o (refs 1).  0, or -1 with errno. */
USOCK__HIDDEN int usock__sync_init(struct usock__sync *o,
                                   void (*destroy)(struct usock__sync *));

/* Drop a reference; the last one destroys the object. */
USOCK__HIDDEN void usock__sync_unref(struct usock__sync *o);

/*
 * With o->lock held: wait in q until a waker takes w (its result), the
 * deadline dl passes (ETIMEDOUT) or the task is cancelled (ECANCELED).
 * The caller has checked that waiting is allowed (dl != 0, not cancelled)
 * and filled w->item.  Returns 0 or an errno value, with o->lock released.
 */
USOCK__HIDDEN int usock__sync_wait(struct usock__sync *o,
                                   struct usock__waitq *q,
                                   struct usock__qwait *w, int64_t dl);

/*
 * With o->lock held: take the oldest waiter of q out of it and wake it with
 * `result`; before, fill(w, arg) (may be NULL) copies what it wants.
 * 1 when a waiter was woken, 0 when q has none left.
 */
USOCK__HIDDEN int usock__waitq_wake(struct usock__waitq *q, int result,
                                    void (*fill)(struct usock__qwait *w,
                                                 void *arg),
                                    void *arg);

/* A call's timeout (seconds, as in the API) in ns: -1 none, 0 never wait,
 * > 0 ns; -2 for an invalid one (EINVAL). */
USOCK__HIDDEN int64_t usock__sync_timeout(double timeout);

/* What a call that has to wait does first: its deadline from timeout_ns
 * (with the task's deadline) into *dl, then EAGAIN when it must not wait,
 * ECANCELED for a cancelled task; 0 when it may wait. */
USOCK__HIDDEN int usock__sync_may_wait(int64_t timeout_ns, int64_t *dl);

#endif /* USOCKET_WAITQ_H */
