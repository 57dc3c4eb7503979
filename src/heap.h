/*
 * A binary min-heap of timer nodes keyed by an absolute deadline (monotonic
 * ns).  Nodes are embedded in their owners (wait records); the heap stores
 * pointers and keeps each node's index, so removal is O(log n).  Equal keys
 * pop in insertion order (FIFO), through a sequence number.  The hub's
 * timers (hub->timers) are its one user: it lives next to the hub, not
 * in reactor/, which has no timer list of its own.
 *
 *   a[0] = earliest;  a[i]'s children are a[2i+1], a[2i+2];  node->index = i
 */
#ifndef USOCKET_HEAP_H
#define USOCKET_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "base.h"

#define USOCK__HEAP_NONE ((size_t)-1) /* index of a node not in a heap */

struct usock__heap_node {
    int64_t key;
    uint64_t seq;
    size_t index; /* USOCK__HEAP_NONE when not in the heap */
};

struct usock__heap {
    struct usock__heap_node **a;
    size_t n, cap;
    uint64_t seq;
};

USOCK__HIDDEN void usock__heap_init(struct usock__heap *h);
USOCK__HIDDEN void usock__heap_free(struct usock__heap *h);
/* Insert n with key n->key.  0, or -1 with errno ENOMEM (heap unchanged). */
USOCK__HIDDEN int usock__heap_push(struct usock__heap *h,
                                   struct usock__heap_node *n);
/* Remove n; a no-op when n is not in the heap. */
USOCK__HIDDEN void usock__heap_remove(struct usock__heap *h,
                                      struct usock__heap_node *n);
/* The earliest node, or NULL when empty. */
static inline struct usock__heap_node *
usock__heap_top(const struct usock__heap *h)
{
    return h->n ? h->a[0] : NULL;
}
static inline void usock__heap_node_init(struct usock__heap_node *n)
{
    n->index = USOCK__HEAP_NONE;
}
static inline int usock__heap_node_active(const struct usock__heap_node *n)
{
    return n->index != USOCK__HEAP_NONE;
}

#endif /* USOCKET_HEAP_H */
