/*
 * The hub: one per OS thread, reached through one __thread pointer.  It owns
 * the thread's reactor, its run queue of ready tasks and its timer heap.
 *
 * A blocked task is parked on a wait record that lives on its own stack:
 *
 *   task stack                         hub
 *   ┌───────────────────────┐          ┌────────────────────────┐
 *   │ struct usock__wait w  │◀─────────│ timers (heap of w.timer)│
 *   │   task ───────────────┼──▶ task  │ ready queue ──▶ task …  │
 *   │   timer (heap node)   │          └────────────────────────┘
 *   │   unlink, owner       │◀── socket->rwait / ->wwait, or a joined
 *   │   result (errno)      │    task's joiner list, or hub->run_waiter
 *   └───────────────────────┘
 *
 * Whoever ends the wait (a readiness callback, the timer, a canceller, a
 * closer, a finishing task) calls usock__wake(w, result): it unlinks w from
 * its owner and the timer heap, stores the result and queues the task.  The
 * woken task copies the result into errno on its way out (STYLE rule 5).
 */
#ifndef USOCKET_HUB_H
#define USOCKET_HUB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "base.h"
#include "ctx.h"
#include "heap.h"
#include "reactor.h"
#include "stack.h"

struct usock_hub;
struct usock__task;
struct usock__wait;

typedef void (*usock__unlink_fn)(struct usock__wait *w);

/* A wait in progress, on the waiting task's stack. */
struct usock__wait {
    struct usock__task *task;
    struct usock__heap_node timer; /* in hub->timers when it has a deadline */
    usock__unlink_fn unlink;       /* detaches w from its owner, or NULL */
    void *owner;                   /* socket, joined task, job … */
    struct usock__wait *next;      /* in an owner's list (joiners) */
    int dir;                       /* USOCK__IN / USOCK__OUT for sockets */
    int result;                    /* 0 or an errno value, set by the waker */
};

/* A task.  Spawned tasks keep this at the top of their own stack, 64-byte
 * aligned; the fields every switch and wait touch come first, so they share
 * one cache line. */
struct usock__task {
    struct usock__ctx ctx;
    struct usock__task *next;     /* run queue link */
    struct usock__wait *wait;     /* the wait it is parked on, or NULL */
    struct usock_hub *hub;
    int64_t deadline;             /* task deadline, USOCK__NEVER if none */
    const void *touch[2];         /* what the task will touch first when it
                                     runs (the socket it waited on and the
                                     reactor's record of its fd), for a
                                     prefetch; may be stale */
    unsigned char cancelled;      /* sticky: every blocking call fails */
    unsigned char queued;         /* on the run queue */
    int id;
    /* Cold: spawn, join, exit. */
    struct usock__task *hnext;    /* id table chain */
    struct usock__wait *joiners;  /* tasks waiting in usock_join */
    void (*fn)(void *);
    void *arg;
    struct usock__stack stack;    /* zeroed for the thread's own context */
    void *stack_lo;               /* for AddressSanitizer's fiber calls */
    size_t stack_len;
    void *tsan;                   /* ThreadSanitizer's fiber, or NULL */
};

#ifndef USOCK_CTX_UCONTEXT
_Static_assert(offsetof(struct usock__task, id) + sizeof(int) <= 64,
               "the hot task fields fit one cache line");
#endif

struct usock__inbox_item; /* inbox.c */

struct usock_hub {
    struct usock__task *current;
    struct usock__task main;          /* the thread's own context */
    struct usock__task *rq_head, *rq_tail;
    size_t rq_len;
    size_t round_left;                /* pops left before a reactor pass */
    int64_t last_poll;                /* when the last reactor pass ended */
    struct usock__heap timers;
    struct usock__reactor reactor;
    int has_reactor;
    int embedded;                     /* runs inside a daemon's ev loop */
    int main_woken;                   /* embedded: the main context's wait
                                         ended */
    int driving;                      /* in usock_hub_run_nowait (embed.c):
                                         a task that blocks goes back to
                                         it */
    struct usock__task **ids;         /* hash table id -> task (task.c) */
    size_t ids_mask;
    size_t ntasks;                    /* spawned tasks alive */
    struct usock__task *zombie;       /* finished, stack to release */
    struct usock__wait *run_waiter;   /* a task in usock_run */
    /* Cross-thread inbox, guarded by lock. */
    pthread_mutex_t lock;
    struct usock__inbox_item *inbox;
    int jobs;                         /* resolver workers in flight */
    int dead;                         /* 1: the thread is exiting (no
                                         more messages); 2: it is done
                                         with the hub, which stays
                                         allocated until the last worker
                                         is done with it too */
    int shutdown;                     /* usock_hub_shutdown was called */
    /* Posts whose task could not be spawned yet (out of memory, at the
     * task cap): kept, retried from retry_at (inbox.c). */
    void *deferred;
    int64_t retry_at, retry_gap;
    /* Task ids (task.c): the current range [id_end - id_grab, id_end),
     * of which [.., id_next) were issued; serial names the hub there. */
    int id_next, id_end, id_grab;
    unsigned serial;
    unsigned fork_gen;                /* usock__fork_gen when made */
};

/* Forks seen by this process (the child handler counts them).  A hub
 * whose fork_gen is older belongs to a thread of an ancestor process: that
 * thread does not exist here, and the fork may have caught its lock held,
 * so the inbox never touches such a hub (usock__hub_foreign).  Only the
 * hub's own thread starts or cancels its jobs, so those need no check. */
USOCK__HIDDEN extern unsigned usock__fork_gen;
static inline int usock__hub_foreign(const struct usock_hub *h)
{
    return unlikely(h->fork_gen != usock__fork_gen);
}

/* This thread's hub, if it exists (never creates one). */
USOCK__HIDDEN extern __thread struct usock_hub *usock__tls_hub
    __attribute__((tls_model("initial-exec")));

/* This thread's hub, created on first use (without a reactor).  NULL with
 * errno ENOMEM. */
USOCK__HIDDEN struct usock_hub *usock__hub_get(void);

/* Give the hub its reactor if it has none.  0, or -1 with errno. */
USOCK__HIDDEN int usock__hub_reactor(struct usock_hub *h);

/* Give h the reactor `ops`: on the daemon's libev loop (embedded, with the
 * hooks tick and busy of embed.c) or, loop NULL, its own (tick and busy
 * NULL).  0, or -1 with errno from ops->init. */
struct ev_loop;
USOCK__HIDDEN int usock__hub_attach(struct usock_hub *h,
                                    const struct usock__reactor_ops *ops,
                                    struct ev_loop *loop, void (*tick)(void *),
                                    int (*busy)(void *));

/* Park the current task on w until a waker calls usock__wake(w, …) or the
 * deadline (absolute ns, USOCK__NEVER for none) passes (result ETIMEDOUT).
 * The caller has filled w->unlink/owner and linked w to its owner.  Returns
 * w->result. */
USOCK__HIDDEN int usock__park(struct usock_hub *h, struct usock__wait *w,
                              int64_t deadline);

/* End the wait w with result (0 or an errno value) and queue its task. */
USOCK__HIDDEN void usock__wake(struct usock__wait *w, int result);

/* Queue t to run (no-op if already queued). */
USOCK__HIDDEN void usock__ready(struct usock_hub *h, struct usock__task *t);

/* Run other tasks until the current one is queued again. */
USOCK__HIDDEN void usock__hub_block(struct usock_hub *h);

/* Embedding in a daemon's libev loop (embed.c): usock__embed_tick is the
 * reactor's tick hook (one round of the hub per loop iteration; owner is
 * the hub); usock__embed_block runs the daemon's loop until the wait of a
 * blocking call made by the thread's own context is over. */
USOCK__HIDDEN void usock__embed_tick(void *owner);
USOCK__HIDDEN void usock__embed_block(struct usock_hub *h);

/*
 * The cross-thread inbox and posts (inbox.c).
 */

/* Thread-safe: run fn(arg) on hub h's thread.  0, or -1 with errno (ENOMEM,
 * ESHUTDOWN). */
USOCK__HIDDEN int usock__hub_send(struct usock_hub *h, void (*fn)(void *),
                                  void *arg);

/* Worker threads (the resolver) that will hand a result to hub h: call
 * usock__hub_job_start on h's thread before the worker starts (the hub then
 * outlives its thread until the worker is done), and from the worker
 * usock__hub_job_done(h, fn, arg): 0 when fn(arg) will run on h's thread,
 * 1 when that thread has exited (the caller frees arg itself), -1 with
 * errno ENOMEM (try again).  usock__hub_job_cancel undoes a start whose
 * worker never ran. */
USOCK__HIDDEN void usock__hub_job_start(struct usock_hub *h);
USOCK__HIDDEN int usock__hub_job_done(struct usock_hub *h, void (*fn)(void *),
                                      void *arg);
USOCK__HIDDEN void usock__hub_job_cancel(struct usock_hub *h);

/* Sockets whose watcher is registered on h (usock.hub) hold it, so h
 * stays allocated after its thread exits until the last is closed. */
USOCK__HIDDEN void usock__hub_hold(struct usock_hub *h);
USOCK__HIDDEN void usock__hub_release(struct usock_hub *h);

/* On h's thread, in its loop: run the work other threads handed to h.
 * The first look is without the lock (other threads store h->inbox
 * atomically); usock__inbox_take is the rest. */
USOCK__HIDDEN void usock__inbox_take(struct usock_hub *h);
static inline void usock__inbox_run(struct usock_hub *h)
{
    if (__atomic_load_n(&h->inbox, __ATOMIC_ACQUIRE)) {
        usock__inbox_take(h);
    }
}
/* Free what is in h's inbox without running it (the fork child). */
USOCK__HIDDEN void usock__inbox_drop(struct usock_hub *h);

/* Try the deferred posts again, in order, once their time (retry_at) has
 * come; usock__posts_respawn is the rest. */
USOCK__HIDDEN void usock__posts_respawn(struct usock_hub *h, int64_t now);
static inline void usock__posts_retry(struct usock_hub *h, int64_t now)
{
    if (h->deferred != NULL && now >= h->retry_at) {
        usock__posts_respawn(h, now);
    }
}
/* Free the deferred posts without running them. */
USOCK__HIDDEN void usock__posts_free(struct usock_hub *h);

/* Finish the current task: never returns. */
USOCK__HIDDEN void usock__hub_exit(struct usock_hub *h) __attribute__((noreturn));

/*
 * Tasks, for the hub (task.c).  task.c owns the tasks: their ids (the
 * process-wide ranges and each hub's table h->ids), spawning, finishing
 * and freeing them.  The hub reaches them only through these calls; it
 * never walks h->ids itself.
 */

/* A fresh task id of hub h (unique process-wide, > 0), or -1 with errno
 * ENOMEM or EAGAIN (every id was issued). */
USOCK__HIDDEN int usock__task_id(struct usock_hub *h);
/* Release the task's resources (its stack, which holds it). */
USOCK__HIDDEN void usock__task_free(struct usock__task *t);
/* Every spawned task of h (not the thread's own context): mark it
 * cancelled when `cancel` is set, and end its wait, if any, with e. */
USOCK__HIDDEN void usock__tasks_wake(struct usock_hub *h, int e, int cancel);
/* Teardown (thread exit, the fork child): unlink the wait of every spawned
 * task of h and free each but `keep`; with keep NULL, free the table as
 * well. */
USOCK__HIDDEN void usock__tasks_release(struct usock_hub *h,
                                        struct usock__task *keep);
/* Take (1) or release (0) the lock of the id ranges: around fork. */
USOCK__HIDDEN void usock__task_ids_lock(int lock);

/* Release the stack of a task that finished before the last switch (its
 * successor runs this, off the dead stack): after every switch. */
static inline void usock__hub_reap(struct usock_hub *h)
{
    if (unlikely(h->zombie != NULL)) {
        struct usock__task *z = h->zombie;
        h->zombie = NULL;
        usock__task_free(z);
    }
}

/* The resolver's pool around fork: 0 before (lock), 1 in the parent
 * after (unlock), 2 in the child (no workers, empty queue). */
USOCK__HIDDEN void usock__resolve_fork(int phase);

/*
 * AddressSanitizer must be told about every stack switch, or it reports
 * false errors: usock__asan_leave before usock__ctx_switch (NULL `fake`
 * when the leaving task never comes back), usock__asan_arrive after it.
 * ThreadSanitizer too: each task is a fiber of its own (make check-tsan);
 * usock__asan_leave switches it.  USOCK__ASAN, USOCK__TSAN: base.h.
 */
#ifdef USOCK__TSAN
#include <sanitizer/tsan_interface.h>
#define usock__tsan_new() __tsan_create_fiber(0)
#define usock__tsan_self() __tsan_get_current_fiber()
#define usock__tsan_free(f) __tsan_destroy_fiber(f)
#define usock__tsan_switch(t) __tsan_switch_to_fiber((t)->tsan, 0)
#else
#define usock__tsan_new() NULL
#define usock__tsan_self() NULL
#define usock__tsan_free(f) ((void)(f))
#define usock__tsan_switch(t) ((void)(t))
#endif

#ifdef USOCK__ASAN
#include <sanitizer/common_interface_defs.h>
static inline void usock__asan_leave(void **fake, struct usock__task *to)
{
    __sanitizer_start_switch_fiber(fake, to->stack_lo, to->stack_len);
}
static inline void usock__asan_arrive(void *fake)
{
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
}
#else
static inline void usock__asan_leave(void **fake, struct usock__task *to)
{
    (void)fake;
    usock__tsan_switch(to);
}
static inline void usock__asan_arrive(void *fake)
{
    (void)fake;
}
#endif

/* Non-zero when the current task of this thread was cancelled. */
static inline int usock__cancelled(void)
{
    struct usock_hub *h = usock__tls_hub;
    return h != NULL && h->current->cancelled;
}

/*
 * Timeouts and deadlines (deadline.c).  A blocking call computes its
 * deadline once, lazily (only when it first has to wait): USOCK__DL_UNSET
 * until then.  0 means non-blocking.
 */
#define USOCK__DL_UNSET INT64_MIN

/* The deadline for a call on something whose timeout is `timeout_ns`
 * (-1 none, 0 non-blocking, > 0 ns): the earlier of now + timeout and the
 * current task's deadline; never 0 unless non-blocking. */
USOCK__HIDDEN int64_t usock__deadline(int64_t timeout_ns);

/* Seconds (API) <-> nanoseconds.  seconds_to_ns returns -1 for EINVAL
 * (negative other than USOCK_NONE, NaN, infinite), -2 for USOCK_NONE. */
USOCK__HIDDEN int64_t usock__seconds_to_ns(double seconds);

/* Default timeout for new sockets, in ns (-1 none): read inline, as every
 * accepted socket takes it; set by usock_setdefaulttimeout (atomically). */
USOCK__HIDDEN extern int64_t usock__default_timeout_ns;
static inline int64_t usock__default_timeout(void)
{
    return __atomic_load_n(&usock__default_timeout_ns, __ATOMIC_RELAXED);
}

/* Sleep until `until` (monotonic ns) with nothing else to run: a thread
 * with no reactor.  EINTR resumes the sleep. */
USOCK__HIDDEN void usock__sleep_until(int64_t until);

#endif /* USOCKET_HUB_H */
