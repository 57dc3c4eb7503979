/*
 * The scheduler's inner loop, shared by the two files that run tasks:
 * hub.c (a hub on its own reactor: usock__hub_block, next_task) and
 * embed.c (a hub inside a daemon's loop: usock__embed_tick, drive).
 * Popping the run queue, the prefetches, firing due timers and the stack
 * switch are on the per-event path, so they are defined here, static:
 * each of those files has its own copy and no call crosses a file.  The
 * prefetches are always_inline; the others are plain `static` (unused is
 * only for an includer that needs not all of them), so GCC inlines them
 * or not exactly as it did when they were file-local to hub.c.  Only
 * hub.c and embed.c include this header.
 *
 *   rq_head ──▶ task ──next──▶ task ──next──▶ … ◀── rq_tail
 *   usock__rq_pop: take the head, prefetch the next task (stack top,
 *   socket, reactor record) and the record of the one after it.
 */
#ifndef USOCKET_SCHED_H
#define USOCKET_SCHED_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "base.h"
#include "hub.h"

/* Cache lines a task touches above its saved stack pointer as it resumes
 * (the switch's saved registers and the frames of a blocked recv or send
 * returning: about 430 bytes on x86_64 with gcc -O2, below a
 * 1 KiB buffer on the stack of the task's function). */
#define USOCK__RESUME_LINES 8

/*
 * With hundreds of tasks or more, a task's stack top, socket and reactor
 * record have usually left the caches by the time it runs, and every
 * resume would wait for memory.  So we fetch ahead, twice: when a task is
 * woken (its record is being written then, so its page is mapped in the
 * TLB and the lines can come in while the rest of the batch runs), and
 * when the task before it is popped.  Hints only: a stale pointer is
 * harmless to a prefetch.  always_inline: GCC deletes calls to a function
 * that does nothing but prefetch, as calls without effect.
 */
static inline __attribute__((always_inline)) void
usock__prefetch_task(const struct usock__task *n)
{
#ifndef USOCK_CTX_UCONTEXT
    const char *sp = n->ctx.sp;
    for (size_t i = 0; i < USOCK__RESUME_LINES; i++) {
        __builtin_prefetch(sp + 64 * i);
    }
#endif
    if (n->touch[0]) {
        __builtin_prefetch(n->touch[0]);
        __builtin_prefetch((const char *)n->touch[0] + 64);
    }
    if (n->touch[1]) {
        __builtin_prefetch(n->touch[1]);
    }
}

/* At a pop: the next task (whose record the previous pop fetched), and the
 * record of the one after it. */
static inline __attribute__((always_inline)) void
usock__prefetch_ahead(const struct usock__task *n)
{
    if (n) {
        __builtin_prefetch(n->next);
        usock__prefetch_task(n);
    }
}

/* Take the first ready task off the run queue, or NULL. */
static __attribute__((unused)) struct usock__task *
usock__rq_pop(struct usock_hub *h)
{
    struct usock__task *t = h->rq_head;
    if (t) {
        usock__prefetch_ahead(t->next);
        h->rq_head = t->next;
        if (!h->rq_head) {
            h->rq_tail = NULL;
        }
        h->rq_len--;
        t->queued = 0;
    }
    return t;
}

/* Wake every wait whose deadline has passed. */
static __attribute__((unused)) void usock__fire_timers(struct usock_hub *h,
                                                       int64_t now)
{
    struct usock__heap_node *n;
    while ((n = usock__heap_top(&h->timers)) && n->key <= now) {
        usock__wake(container_of(n, struct usock__wait, timer), ETIMEDOUT);
    }
}

/* Run `to` (from the running `from`); returns when something switches back
 * to `from`. */
static __attribute__((unused)) void usock__switch_to(struct usock_hub *h,
                                                     struct usock__task *from,
                                                     struct usock__task *to)
{
    void *fake = NULL;

    h->current = to;
    usock__asan_leave(&fake, to);
    usock__ctx_switch(&from->ctx, &to->ctx);
    usock__asan_arrive(fake);
    /* Back on `from`'s stack: whoever switched here set h->current. */
    usock__hub_reap(h);
}

#endif /* USOCKET_SCHED_H */
