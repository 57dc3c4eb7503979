/*
 * Task stacks: mmap'd, with a PROT_NONE guard page at the low end, cached per
 * thread (at most USOCK__STACK_CACHE stacks in all), registered with valgrind
 * under --enable-valgrind.
 *
 *   base                 lo                                   lo + size
 *   | guard (PROT_NONE)  | usable stack, grows down  <──────── |
 */
#ifndef USOCKET_STACK_H
#define USOCKET_STACK_H

#include <stddef.h>

#include "reactor.h"

#define USOCK__STACK_DEFAULT ((size_t)64 * 1024)
#define USOCK__STACK_MIN ((size_t)16 * 1024)
#define USOCK__STACK_MAX ((size_t)1 << 30)
#define USOCK__STACK_CACHE 1024

struct usock__stack {
    void *base;   /* start of the mapping (the guard page) */
    void *lo;     /* lowest usable byte */
    size_t size;  /* usable bytes, a multiple of the page size */
    unsigned vgid; /* valgrind stack id, 0 when not registered */
};

/* A stack of `size` usable bytes (rounded up to pages), from this thread's
 * cache when one fits.  0, or -1 with errno ENOMEM. */
USOCK__HIDDEN int usock__stack_get(struct usock__stack *st, size_t size);
/* Give the stack back to this thread's cache, or unmap it when full. */
USOCK__HIDDEN void usock__stack_put(struct usock__stack *st);
/* Unmap every cached stack of this thread (at hub teardown). */
USOCK__HIDDEN void usock__stack_drain(void);
/* Page size, cached. */
USOCK__HIDDEN size_t usock__page_size(void);

#endif /* USOCKET_STACK_H */
