/*
 * The timer heap: a binary min-heap of pointers to nodes embedded in their
 * owners.  Each node knows its index, so removal of any node is O(log n).
 * Ties on the key are broken by a sequence number taken at push, which makes
 * equal deadlines pop in insertion order (FIFO).
 *
 *              a[0]                  a[i]'s parent:   a[(i - 1) / 2]
 *            /      \                a[i]'s children: a[2i + 1], a[2i + 2]
 *        a[1]        a[2]            a[i]->index == i
 *       /    \      /    \
 *     a[3]  a[4]  a[5]  a[6]
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "heap.h"
#include "reactor.h"

#define HEAP_MIN_CAP 16

/* Nonzero when x must sit above y: an earlier key, or the same key pushed
 * earlier. */
static int before(const struct usock__heap_node *x,
                  const struct usock__heap_node *y)
{
    if (x->key != y->key) {
        return x->key < y->key;
    }
    return x->seq < y->seq;
}

static void place(struct usock__heap *h, size_t i, struct usock__heap_node *n)
{
    h->a[i] = n;
    n->index = i;
}

/* Move n up from slot i until its parent comes before it. */
static void sift_up(struct usock__heap *h, size_t i, struct usock__heap_node *n)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(n, h->a[parent])) {
            break;
        }
        place(h, i, h->a[parent]);
        i = parent;
    }
    place(h, i, n);
}

/* Move n down from slot i until both children come after it. */
static void sift_down(struct usock__heap *h, size_t i,
                      struct usock__heap_node *n)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n) {
            break;
        }
        if (child + 1 < h->n && before(h->a[child + 1], h->a[child])) {
            child++;
        }
        if (!before(h->a[child], n)) {
            break;
        }
        place(h, i, h->a[child]);
        i = child;
    }
    place(h, i, n);
}

/* Make room for one more pointer: double the array.  0, or -1 with errno
 * ENOMEM and the heap unchanged. */
static int grow(struct usock__heap *h)
{
    size_t cap = h->cap ? h->cap * 2 : HEAP_MIN_CAP;
    struct usock__heap_node **a;

    if (cap < h->cap || cap > SIZE_MAX / sizeof(struct usock__heap_node *)) {
        errno = ENOMEM;
        return -1;
    }
    a = usock__realloc(h->a, cap * sizeof(struct usock__heap_node *));
    if (a == NULL) {
        errno = ENOMEM;
        return -1;
    }
    h->a = a;
    h->cap = cap;
    return 0;
}

/* Set up an empty heap; it allocates nothing until the first push. */
void usock__heap_init(struct usock__heap *h)
{
    h->a = NULL;
    h->n = 0;
    h->cap = 0;
    h->seq = 0;
}

/* Free the pointer array.  The nodes belong to their owners and are not
 * touched; the heap is empty and usable again afterwards. */
void usock__heap_free(struct usock__heap *h)
{
    free(h->a);
    usock__heap_init(h);
}

/* Insert n with key n->key, after every node of the same key.  0, or -1 with
 * errno ENOMEM (heap and n unchanged). */
int usock__heap_push(struct usock__heap *h, struct usock__heap_node *n)
{
    if (h->n == h->cap && grow(h) != 0) {
        return -1;
    }
    n->seq = h->seq++;
    h->n++;
    sift_up(h, h->n - 1, n);
    return 0;
}

/* Remove n from h in O(log n) and mark it USOCK__HEAP_NONE.  A no-op when n
 * is not in h. */
void usock__heap_remove(struct usock__heap *h, struct usock__heap_node *n)
{
    size_t i = n->index;
    struct usock__heap_node *last;

    if (i >= h->n || h->a[i] != n) {
        return;
    }
    n->index = USOCK__HEAP_NONE;
    last = h->a[--h->n];
    if (last == n) {
        return;
    }
    if (i > 0 && before(last, h->a[(i - 1) / 2])) {
        sift_up(h, i, last);
    } else {
        sift_down(h, i, last);
    }
}
