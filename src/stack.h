/*
 * Task stacks: carved from per-thread chunks (one mapping holds up to
 * USOCK__CHUNK_SLOTS stacks of one size), each slot a guard page below its
 * usable part; whether the guard pages are protected (PROT_NONE, two kernel
 * mappings per stack) or not (two per chunk) is decided per chunk by
 * $USOCKET_STACK_GUARD (see src/stack.c and usocket(7)).  Freed stacks go
 * back to their size's free list (O(1) get and put); beyond the
 * USOCK__STACK_HOT most recently freed, those free for a second or more
 * have their pages released (all but the top one).  Registered with valgrind under
 * --enable-valgrind.
 *
 *   base                 lo                                   lo + size
 *   | guard page         | usable stack, grows down  <──────── |
 */
#ifndef USOCKET_STACK_H
#define USOCKET_STACK_H

#include <stddef.h>

#include "base.h"

#define USOCK__STACK_DEFAULT ((size_t)64 * 1024)
#define USOCK__STACK_MIN ((size_t)16 * 1024)
#define USOCK__STACK_MAX ((size_t)1 << 30)
#define USOCK__CHUNK_SLOTS 64      /* stacks per chunk, at most */
#define USOCK__CHUNK_BYTES ((size_t)8 << 20) /* a chunk's target size */
#define USOCK__STACK_HOT 64        /* free stacks that keep their pages */

struct usock__slot;

struct usock__stack {
    void *base;   /* start of the slot (its guard page) */
    void *lo;     /* lowest usable byte */
    size_t size;  /* usable bytes, a multiple of the page size */
    unsigned vgid; /* valgrind stack id, 0 when not registered */
    struct usock__slot *slot; /* the slot's record in its chunk */
};

/* A stack of `size` usable bytes (rounded up to pages), from this thread's
 * free list of that size when there is one.  0, or -1 with errno ENOMEM. */
USOCK__HIDDEN int usock__stack_get(struct usock__stack *st, size_t size);
/* Give the stack back to this thread's free list of its size. */
USOCK__HIDDEN void usock__stack_put(struct usock__stack *st);
/* Release the pages of the free stacks beyond the hot set that were freed
 * before the previous trim (all of them beyond the hot set when `all`);
 * put calls it at most once a second.  Returns how many it released. */
USOCK__HIDDEN size_t usock__stack_trim(int all);
/* Unmap every chunk of this thread whose stacks are all free (at hub
 * teardown). */
USOCK__HIDDEN void usock__stack_drain(void);
/* 1 when the stack's guard page is protected (PROT_NONE). */
USOCK__HIDDEN int usock__stack_guarded(const struct usock__stack *st);
/* Page size, cached. */
USOCK__HIDDEN size_t usock__page_size(void);

#endif /* USOCKET_STACK_H */
