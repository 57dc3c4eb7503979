/*
 * Task stacks: one anonymous mapping each, with a PROT_NONE guard page
 * below the usable part so an overflow faults instead of corrupting the
 * neighbouring memory.
 *
 *   base                 lo                                   lo + size
 *   | guard (PROT_NONE)  | usable stack, grows down  <──────── | node |
 *
 * Freed stacks wait in a per-thread cache for the next task of the same
 * size.  The cache needs no storage of its own: while a stack is cached,
 * its list node lives in the top bytes of its own usable area (the task
 * that ran on it is gone).  The list is most recently freed first and
 * holds at most USOCK__STACK_CACHE stacks in all; a put into a full cache
 * unmaps the oldest cached stack.
 *
 *   cache.head ──▶ node ──▶ node ──▶ ... ──▶ NULL    (cache.count <= cap)
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef USOCK_VALGRIND
#include <valgrind/valgrind.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define USOCK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USOCK_ASAN 1
#endif
#endif
#ifdef USOCK_ASAN
#include <sanitizer/asan_interface.h>
#endif

#include "stack.h"

#ifndef MAP_STACK
#define MAP_STACK 0
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

struct node {
    struct usock__stack st;
    struct node *next;
};

struct cache {
    struct node *head;
    unsigned count;
};

static __thread struct cache cache __attribute__((tls_model("initial-exec")));

/* Returns the page size, asked of the system once. */
size_t usock__page_size(void)
{
    static size_t page;
    size_t p = __atomic_load_n(&page, __ATOMIC_RELAXED);

    if (p == 0) {
        long v = sysconf(_SC_PAGESIZE);

        p = v > 0 ? (size_t)v : 4096;
        __atomic_store_n(&page, p, __ATOMIC_RELAXED);
    }
    return p;
}

static struct node *node_of(const struct usock__stack *st)
{
    uintptr_t top = (uintptr_t)st->lo + st->size;

    return (struct node *)((top - sizeof(struct node)) & ~(uintptr_t)15);
}

/* Under AddressSanitizer, clears the poison that the frames of a task
 * left on its stack: the task never returned through them, so the
 * redzones would otherwise trip the next user of the stack. */
static void unpoison(const struct usock__stack *st)
{
#ifdef USOCK_ASAN
    ASAN_UNPOISON_MEMORY_REGION(st->lo, st->size);
#else
    (void)st;
#endif
}

static void unmap(struct usock__stack *st)
{
#ifdef USOCK_VALGRIND
    VALGRIND_STACK_DEREGISTER(st->vgid);
#endif
    (void)munmap(st->base, st->size + usock__page_size());
    st->base = st->lo = NULL;
    st->size = 0;
    st->vgid = 0;
}

/* Maps a new stack of `size` usable bytes, already rounded to pages. */
static int map(struct usock__stack *st, size_t size)
{
    size_t page = usock__page_size();
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK;
    void *base = mmap(NULL, size + page, PROT_READ | PROT_WRITE, flags,
                      -1, 0);

    if (base == MAP_FAILED) {
        errno = ENOMEM;
        return -1;
    }
    if (mprotect(base, page, PROT_NONE) != 0) {
        (void)munmap(base, size + page);
        errno = ENOMEM;
        return -1;
    }
    st->base = base;
    st->lo = (char *)base + page;
    st->size = size;
    st->vgid = 0;
#ifdef USOCK_VALGRIND
    st->vgid = VALGRIND_STACK_REGISTER(st->lo, (char *)st->lo + size);
#endif
    return 0;
}

/* Unlinks and returns the first cached stack of `size` bytes, or NULL. */
static struct node *take(size_t size)
{
    struct node **link;

    for (link = &cache.head; *link != NULL; link = &(*link)->next) {
        struct node *n = *link;

        if (n->st.size == size) {
            *link = n->next;
            cache.count--;
            return n;
        }
    }
    return NULL;
}

/* Gives `st` a stack of at least `size` usable bytes, rounded up to whole
 * pages (a size of 0 gets one page): a cached one of that size when there
 * is one, else a new mapping.  Returns 0, or -1 with errno ENOMEM when
 * size exceeds USOCK__STACK_MAX or the system is out of memory or
 * mappings. */
int usock__stack_get(struct usock__stack *st, size_t size)
{
    size_t page = usock__page_size();
    struct node *n;

    if (size > USOCK__STACK_MAX) {
        errno = ENOMEM;
        return -1;
    }
    size = size == 0 ? page : (size + page - 1) & ~(page - 1);
    n = take(size);
    if (n == NULL) {
        return map(st, size);
    }
    *st = n->st;
    return 0;
}

/* Unmaps the oldest cached stack (the tail of the list). */
static void evict_oldest(void)
{
    struct node **link = &cache.head;
    struct usock__stack st;

    while ((*link)->next != NULL) {
        link = &(*link)->next;
    }
    st = (*link)->st;
    *link = NULL;
    cache.count--;
    unmap(&st);
}

/* Returns the stack to this thread's cache, unmapping the oldest cached
 * stack first when the cache is full.  A NULL or empty `st` is ignored;
 * `st` itself is cleared either way. */
void usock__stack_put(struct usock__stack *st)
{
    struct node *n;

    if (st == NULL || st->base == NULL) {
        return;
    }
    if (cache.count >= USOCK__STACK_CACHE) {
        evict_oldest();
    }
    unpoison(st);
    n = node_of(st);
    n->st = *st;
    n->next = cache.head;
    cache.head = n;
    cache.count++;
    st->base = st->lo = NULL;
    st->size = 0;
    st->vgid = 0;
}

/* Unmaps every stack cached by this thread. */
void usock__stack_drain(void)
{
    while (cache.head != NULL) {
        struct node *n = cache.head;
        struct usock__stack st = n->st;

        cache.head = n->next;
        unmap(&st);
    }
    cache.count = 0;
}
