/*
 * Portable context switch on getcontext/makecontext/swapcontext, for CPUs
 * without a hand-written switch (configure --with-ctx=ucontext).  It is
 * slower than the assembly versions: glibc's swapcontext also saves and
 * restores the signal mask, one system call per switch.
 *
 * makecontext passes only int arguments to the new context's function, so
 * the entry point and its argument are stored in a launch record at the
 * top of the new stack, and the record's address travels split into two
 * 32-bit halves:
 *
 *     stack_lo                                        stack_lo + size
 *     | stack given to makecontext, grows down <────── | launch record |
 */
#include "config.h"

#ifdef USOCK_CTX_UCONTEXT

#include <stdint.h>
#include <ucontext.h>

#include "ctx.h"

struct launch {
    void (*entry)(void *);
    void *arg;
};

/* The first function a new context runs.  The entry point must never
 * return; if it does, that is an internal invariant violation, and the
 * context traps forever rather than let uc_link == NULL end the thread. */
static void trampoline(unsigned hi, unsigned lo)
{
    /* Two 16-bit shifts: a single shift by 32 is undefined when uintptr_t
     * has 32 bits. */
    uintptr_t p = ((uintptr_t)hi << 16 << 16) | (uintptr_t)lo;
    const struct launch *l = (const struct launch *)p;

    l->entry(l->arg);
    for (;;) {
        __builtin_trap();
    }
}

/* Saves the caller's registers and signal mask into `from` and resumes
 * `to`; returns when someone switches back to `from`. */
void usock__ctx_switch(struct usock__ctx *from, struct usock__ctx *to)
{
    (void)swapcontext(&from->uc, &to->uc);
}

/* Prepares `c` so the first switch to it calls entry(arg) on
 * [stack_lo, stack_lo + size).  The launch record takes the top 16-byte
 * aligned slot of the stack; the rest is the context's stack. */
void usock__ctx_make(struct usock__ctx *c, void *stack_lo, size_t size,
                     void (*entry)(void *), void *arg)
{
    uintptr_t top = ((uintptr_t)stack_lo + size) & ~(uintptr_t)15;
    uintptr_t rec = (top - sizeof(struct launch)) & ~(uintptr_t)15;
    struct launch *l = (struct launch *)rec;

    l->entry = entry;
    l->arg = arg;
    (void)getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack_lo;
    c->uc.uc_stack.ss_size = rec - (uintptr_t)stack_lo;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, (void (*)(void))trampoline, 2,
                (unsigned)((uint64_t)rec >> 32), (unsigned)rec);
}

#endif /* USOCK_CTX_UCONTEXT */
