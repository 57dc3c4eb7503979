/*
 * The per-thread hub: run queue, waking, timers, the reactor pass,
 * switching, and the life cycle of the hub itself (creation, reactor,
 * thread exit, fork), with usock_hub_self and usock_hub_shutdown.
 *
 * Elsewhere: the cross-thread inbox and posts in inbox.c; embedding in a
 * daemon's loop (libev or any other) in embed.c, which shares the inline
 * scheduler core of run.h; timeouts and deadlines in deadline.c.
 *
 * Hub and tasks: task.c owns the tasks (their ids, the id table h->ids,
 * spawning, finishing, freeing), and the hub is what they call to wait,
 * wake and switch.  The hub calls back into task.c only through the
 * "Tasks, for the hub" calls of hub.h: usock__task_id (the id of the
 * thread's own context), usock__task_free (reaping a finished task),
 * usock__tasks_wake (fail or cancel every wait), usock__tasks_release
 * (thread exit, fork child) and usock__task_ids_lock (fork).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include <usocket.h>

#include "hub.h"
#include "internal.h"
#include "run.h"

__thread struct usock_hub *usock__tls_hub
    __attribute__((tls_model("initial-exec")));

static pthread_key_t hub_key;
static pthread_once_t hub_key_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------------------ */
/*  Run queue                                                               */
/* ------------------------------------------------------------------------ */

void usock__ready(struct usock_hub *h, struct usock__task *t)
{
    if (t->queued) {
        return;
    }
    t->queued = 1;
    t->next = NULL;
    if (h->rq_tail) {
        h->rq_tail->next = t;
    } else {
        h->rq_head = t;
    }
    h->rq_tail = t;
    h->rq_len++;
}

/* ------------------------------------------------------------------------ */
/*  Waking                                                                  */
/* ------------------------------------------------------------------------ */

void usock__wake(struct usock__wait *w, int result)
{
    struct usock__task *t = w->task;
    struct usock_hub *h = t->hub;

    if (w->unlink) {
        w->unlink(w);
        w->unlink = NULL;
    }
    usock__heap_remove(&h->timers, &w->timer);
    w->result = result;
    t->touch[0] = w->owner;
    t->touch[1] = h->reactor.hint;
    usock__prefetch_task(t);
    if (t->wait == w) {
        t->wait = NULL;
    }
    usock__ready(h, t);
}

/* The reactor cannot wait (a failed poll(2) or epoll_wait): end every
 * blocked call of the hub with that errno rather than retry at once. */
static void fail_waits(struct usock_hub *h, int e)
{
    if (e == 0 || e == EINTR) {
        return;
    }
    usock__tasks_wake(h, e, 0);
    if (h->main.wait) {
        usock__wake(h->main.wait, e);
    }
}

/*
 * One reactor pass: wait for I/O until the earliest timer (or not at all
 * when `block` is 0 or tasks are ready), then fire due timers and run the
 * inbox.
 */
static void poll_once(struct usock_hub *h, int block)
{
    int64_t deadline = 0;

    if (block && !h->rq_head) {
        struct usock__heap_node *n = usock__heap_top(&h->timers);
        deadline = n ? n->key : USOCK__NEVER;
        if (h->deferred && h->retry_at < deadline) {
            deadline = h->retry_at;
        }
        if (deadline <= 0) {
            deadline = 1; /* already due: do not block (0 is "no wait") */
        }
    }
    if (h->reactor.ops->run_once(&h->reactor, deadline) < 0) {
        fail_waits(h, errno);
    }
    h->last_poll = usock__clock_ns();
    if (h->timers.n) {
        usock__fire_timers(h, h->last_poll);
    }
    usock__inbox_run(h);
    usock__posts_retry(h, h->last_poll);
    h->round_left = h->rq_len;
}

/* While tasks stay ready, look at the reactor at most this often (ns): a
 * round of ready tasks that ends sooner starts the next one at once, after
 * only the timers are checked. */
#define POLL_EVERY 1000000

/* ------------------------------------------------------------------------ */
/*  Switching                                                               */
/* ------------------------------------------------------------------------ */

/* The next task to run, after a reactor pass when the round is over.
 * noinline: GCC kept it out of line, whole, while usock__hub_block held
 * the embedded loop too (before embed.c took it); this keeps the code of
 * a switch as it was measured. */
static __attribute__((noinline)) struct usock__task *
next_task(struct usock_hub *h)
{
    if (h->driving) {
        return &h->main; /* embed.c's drive() pops the next one */
    }
    if (h->embedded) {
        /* The thread's own context is inside usock__embed_tick (the
         * daemon's loop): going back to it is going back to the loop. */
        struct usock__task *t = usock__rq_pop(h);
        if (!t || t == &h->main) {
            h->main_woken |= t != NULL;
            return &h->main;
        }
        return t;
    }
    for (;;) {
        if (h->rq_head && h->round_left > 0) {
            h->round_left--;
            return usock__rq_pop(h);
        }
        if (h->rq_head) {
            /* A whole round ran: a non-blocking reactor pass, unless the
             * last one was less than POLL_EVERY ago (tasks that yield to
             * each other then cost no system call). */
            int64_t now = usock__clock_ns();
            if (now - h->last_poll < POLL_EVERY) {
                usock__fire_timers(h, now);
                h->round_left = h->rq_len;
                continue;
            }
        }
        poll_once(h, h->rq_head == NULL);
    }
}

void usock__hub_block(struct usock_hub *h)
{
    struct usock__task *self = h->current;
    struct usock__task *next;

    if (h->embedded && self == &h->main) {
        usock__embed_block(h);
        return;
    }
    next = next_task(h);
    if (next != self) {
        usock__switch_to(h, self, next);
    }
}

void usock__hub_exit(struct usock_hub *h)
{
    struct usock__task *self = h->current;
    struct usock__task *next;

    h->zombie = self;
    next = next_task(h);
    h->current = next;
    usock__asan_leave(NULL, next);
    usock__ctx_switch(&self->ctx, &next->ctx);
    __builtin_unreachable();
}

int usock__park(struct usock_hub *h, struct usock__wait *w, int64_t deadline)
{
    struct usock__task *t = h->current;

    w->task = t;
    w->result = 0;
    usock__heap_node_init(&w->timer);
    if (deadline != USOCK__NEVER) {
        w->timer.key = deadline;
        if (usock__heap_push(&h->timers, &w->timer) < 0) {
            if (w->unlink) {
                w->unlink(w);
            }
            return ENOMEM;
        }
    }
    t->wait = w;
    usock__hub_block(h);
    return w->result;
}

/* ------------------------------------------------------------------------ */
/*  Life cycle                                                              */
/* ------------------------------------------------------------------------ */

static void cancel_all(void *arg);

/*
 * Thread exit with tasks alive (DESIGN "Lifetimes across threads"): cancel
 * them and run them until every one has finished, so each blocked call
 * returns ECANCELED and the task's own code closes its sockets.  New posts
 * are refused, and tasks they spawned are cancelled too.  Only from the
 * thread's own context (a task calling pthread_exit cannot be unwound).
 */
static void unwind(struct usock_hub *h)
{
    if (h->current != &h->main || !h->has_reactor || h->ntasks == 0) {
        return;
    }
    __atomic_store_n(&h->shutdown, 1, __ATOMIC_RELEASE);
    while (h->ntasks > 0) {
        cancel_all(h);
        if (h->embedded) {
            usock__embed_tick(h);
        } else {
            usock__ready(h, &h->main);
            usock__hub_block(h);
        }
    }
}

/* Thread exit: unwind the tasks, then release the hub and its reactor. */
static void hub_destroy(void *arg)
{
    struct usock_hub *h = arg;
    int jobs;

    unwind(h);
    usock__tls_hub = NULL;
    /* From here on no message gets in, and no worker touches the reactor
     * (they wake it under the lock). */
    pthread_mutex_lock(&h->lock);
    h->dead = 1;
    pthread_mutex_unlock(&h->lock);
    usock__tasks_release(h, NULL);
    if (h->zombie) {
        usock__task_free(h->zombie);
    }
    if (h->has_reactor) {
        h->reactor.ops->destroy(&h->reactor);
    }
    usock__heap_free(&h->timers);
    /* Late messages: posts are dropped (the hub is no longer this thread's),
     * resolver results are freed (their waiters were unlinked above). */
    usock__inbox_run(h);
    usock__posts_free(h);
    usock__stack_drain();
    /* Whichever of this thread and the workers is done last frees h: a
     * worker frees it only once dead is 2. */
    pthread_mutex_lock(&h->lock);
    h->dead = 2;
    jobs = h->jobs;
    pthread_mutex_unlock(&h->lock);
    if (jobs == 0) {
        pthread_mutex_destroy(&h->lock);
        free(h);
    } /* else the last worker frees it (usock__hub_job_done) */
}

/* The bounds of the thread's own stack, for AddressSanitizer. */
static void main_stack(struct usock__task *t)
{
#ifdef USOCK__ASAN
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstack(&a, &t->stack_lo, &t->stack_len);
        pthread_attr_destroy(&a);
    }
#else
    (void)t;
#endif
}

/*
 * fork (DESIGN "Lifetimes across threads"): the child can use usocket at
 * once.  Its copy of the forking thread's hub shares the parent's epoll
 * instance and wake-up fd, so the child handler drops that hub: its tasks
 * are not run in the child (as other threads are not), their stacks are
 * released, its reactor's fds are closed (the parent's registrations are
 * untouched: libev makes no epoll_ctl when destroying a loop), and the
 * child's first call makes a new hub with a reactor of its own.  Sockets
 * stay open in both processes.  Exceptions: a hub embedded in a daemon's
 * loop is kept (the daemon calls ev_loop_fork on its loop, as ev.pod says),
 * and when fork is called from a task, that task must not return in the
 * child (exec or _exit), as its hub is gone.  The locks a fork could catch
 * held (the id table, this hub's inbox) are taken around it.
 */
static void fork_prepare(void)
{
    struct usock_hub *h = usock__tls_hub;

    usock__resolve_fork(0);
    usock__task_ids_lock(1);
    if (h) {
        pthread_mutex_lock(&h->lock);
    }
}

static void fork_parent(void)
{
    struct usock_hub *h = usock__tls_hub;

    if (h) {
        pthread_mutex_unlock(&h->lock);
    }
    usock__task_ids_lock(0);
    usock__resolve_fork(1);
}

unsigned usock__fork_gen;

static void fork_child(void)
{
    struct usock_hub *h = usock__tls_hub;

    /* Every other thread's hub is now foreign: posts to it fail ESHUTDOWN
     * and its lock is never taken.  This thread's stays ours. */
    usock__fork_gen++; /* the child has this one thread yet */
    if (h) {
        h->fork_gen = usock__fork_gen;
        pthread_mutex_unlock(&h->lock);
    }
    usock__task_ids_lock(0);
    usock__resolve_fork(2);
    if (!h || h->embedded) {
        return;
    }
    usock__tls_hub = NULL;
    pthread_setspecific(hub_key, NULL);
    /* Forked from a task: it still runs on h, and keeps the id table. */
    usock__tasks_release(h, h->current == &h->main ? NULL : h->current);
    if (h->main.wait && h->main.wait->unlink) {
        h->main.wait->unlink(h->main.wait);
    }
    if (h->zombie) {
        usock__task_free(h->zombie);
    }
    if (h->has_reactor) {
        h->reactor.ops->destroy(&h->reactor);
    }
    usock__inbox_drop(h); /* posts and resolver results of the parent */
    usock__posts_free(h);
    if (h->current != &h->main) {
        return; /* forked from a task: it still runs on h */
    }
    usock__heap_free(&h->timers);
    /* Sockets of the child may still name h: it stays, as a dead hub,
     * until the last of them is closed (usock__hub_release). */
    h->has_reactor = 0;
    h->dead = 2;
    if (h->jobs == 0) {
        pthread_mutex_destroy(&h->lock);
        free(h);
    }
}

static int key_err; /* pthread_key_create's error, once */

static void make_key(void)
{
    key_err = pthread_key_create(&hub_key, hub_destroy);
    if (key_err == 0) {
        key_err = pthread_atfork(fork_prepare, fork_parent, fork_child);
    }
}

struct usock_hub *usock__hub_get(void)
{
    struct usock_hub *h = usock__tls_hub;

    if (likely(h != NULL)) {
        return h;
    }
    pthread_once(&hub_key_once, make_key);
    if (key_err != 0) {
        /* No key, no thread-exit clean-up: refuse rather than leak. */
        errno = key_err;
        return NULL;
    }
    h = usock__calloc(1, sizeof(*h));
    if (!h) {
        errno = ENOMEM;
        return NULL;
    }
    int e = pthread_mutex_init(&h->lock, NULL);
    if (e == 0 && (e = pthread_setspecific(hub_key, h)) != 0) {
        pthread_mutex_destroy(&h->lock);
    }
    if (e != 0) {
        free(h);
        errno = e;
        return NULL;
    }
    usock__heap_init(&h->timers);
    h->fork_gen = usock__fork_gen;
    h->main.hub = h;
    h->main.deadline = USOCK__NEVER;
    h->main.id = usock__task_id(h);
    if (h->main.id < 0) {
        e = errno;
        pthread_setspecific(hub_key, NULL);
        pthread_mutex_destroy(&h->lock);
        free(h);
        errno = e;
        return NULL;
    }
    main_stack(&h->main);
    h->main.tsan = usock__tsan_self();
    h->current = &h->main;
    usock__tls_hub = h;
    return h;
}

int usock__hub_attach(struct usock_hub *h, const struct usock__reactor_ops *ops,
                      struct ev_loop *loop, void (*tick)(void *),
                      int (*busy)(void *))
{
    h->reactor.ops = ops;
    h->reactor.hooks.tick = tick;
    h->reactor.hooks.busy = busy;
    h->reactor.hooks.owner = h;
    if (ops->init(&h->reactor, loop) < 0) {
        return -1;
    }
    h->has_reactor = 1;
    h->embedded = loop != NULL;
    return 0;
}

int usock__hub_reactor(struct usock_hub *h)
{
    const struct usock__reactor_ops *ops;

    if (h->has_reactor) {
        return 0;
    }
    ops = usock__reactor_pick();
    return ops ? usock__hub_attach(h, ops, NULL, NULL, NULL) : -1;
}

size_t usock__live_tasks(void)
{
    return usock__tls_hub ? usock__tls_hub->ntasks : 0;
}

const char *usock__reactor_name(void)
{
    struct usock_hub *h = usock__tls_hub;
    return h && h->has_reactor ? h->reactor.ops->name : NULL;
}

/* ------------------------------------------------------------------------ */
/*  Public hub calls                                                        */
/* ------------------------------------------------------------------------ */

usock_hub_t *usock_hub_self(void)
{
    struct usock_hub *h = usock__hub_get();

    if (!h || usock__hub_reactor(h) < 0) {
        return NULL;
    }
    return h;
}

/* On the hub's thread: cancel every task but the thread's own context. */
static void cancel_all(void *arg)
{
    usock__tasks_wake(arg, ECANCELED, 1);
}

int usock_hub_shutdown(usock_hub_t *h)
{
    if (!h) {
        return usock__fail(EINVAL);
    }
    __atomic_store_n(&h->shutdown, 1, __ATOMIC_RELEASE);
    if (h == usock__tls_hub) {
        cancel_all(h);
        return 0;
    }
    return usock__hub_send(h, cancel_all, h);
}
