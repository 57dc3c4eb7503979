/*
 * Execution contexts for tasks: a saved stack pointer (hand-written switch
 * in ctx_x86_64.S / ctx_aarch64.S) or a ucontext_t (ctx_ucontext.c, the
 * portable fallback chosen by configure).
 *
 * usock__ctx_switch(from, to) saves the callee-saved registers of the caller
 * into `from` and resumes `to`; it returns when someone switches back to
 * `from`.  usock__ctx_make prepares `c` so the first switch to it calls
 * entry(arg) on the given stack; entry must never return.
 */
#ifndef USOCKET_CTX_H
#define USOCKET_CTX_H

#include <stddef.h>

#include "base.h"
#include "config.h"

#ifdef USOCK_CTX_UCONTEXT
#include <ucontext.h>
struct usock__ctx {
    ucontext_t uc;
};
#else
struct usock__ctx {
    void *sp;
};
#endif

USOCK__HIDDEN void usock__ctx_switch(struct usock__ctx *from,
                                     struct usock__ctx *to);
USOCK__HIDDEN void usock__ctx_make(struct usock__ctx *c, void *stack_lo,
                                   size_t size, void (*entry)(void *),
                                   void *arg);

#endif /* USOCKET_CTX_H */
