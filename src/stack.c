/*
 * Task stacks, carved from chunks: one anonymous mapping holds up to
 * USOCK__CHUNK_SLOTS stacks of one size (about USOCK__CHUNK_BYTES), so
 * 100,000 tasks need a couple of thousand kernel mappings, not 200,000
 * (vm.max_map_count is 65,530 by default).
 *
 *   chunk (one mmap)
 *   | G | stack 0 ...  | G | stack 1 ...  |  ...  | G | stack n-1 ... |
 *     ^ guard page of each slot, below its usable part (stacks grow down)
 *
 * Guard pages.  Protecting a page inside a mapping splits it (mprotect),
 * so a protected guard page per stack costs two kernel mappings per stack
 * again.  Each chunk is therefore made in one of two modes:
 *   - guarded: every slot's guard page is PROT_NONE.  An overflow of any
 *     stack faults (SIGSEGV) on its guard page, as long as no single frame
 *     is larger than a page.  Two mappings per stack.
 *   - unguarded: only the chunk's lowest page is PROT_NONE (two mappings
 *     per chunk).  The slot's guard page is still there but writable: an
 *     overflow of stack 0 faults; an overflow of any other stack runs
 *     through its own guard page (4 KiB of slack, nothing detected) into
 *     the top of the stack below it — the task record of a neighbour — and
 *     corrupts it silently.
 * $USOCKET_STACK_GUARD picks the mode: "1" guards every stack (then the
 * process stops at about vm.max_map_count / 2 stacks, spawn failing with
 * ENOMEM), "0" none; unset or anything else is "auto": chunks are guarded
 * while the process's guarded stacks stay under a quarter of
 * vm.max_map_count (16,382 by default, half the mappings), and the chunks
 * made after that are unguarded.  A program with fewer tasks than that
 * has every stack guarded, as before.
 *
 * Free stacks.  Each size has a free list of slot records (kept in a
 * malloc'd array per chunk, not on the stacks, so a stack's pages can be
 * released): most recently freed first, O(1) get and put.  A chunk's slots
 * not yet used are handed out in address order after the free list is
 * empty.  The USOCK__STACK_HOT most recently freed stacks keep their
 * pages; beyond them, the stacks that have been free since before the
 * previous trim (a second or more) have every page but the top one (where
 * the next task record and first frames go) given back with
 * madvise(MADV_DONTNEED), by usock__stack_trim, which put calls at most
 * once a second.  madvise costs about a microsecond even on an untouched
 * range, far more than a spawn, so a churn of short tasks, which keeps
 * reusing the stacks freed last, must never pay it.  Pops and pushes both
 * happen at the head, so the list stays in the order of the puts (newest
 * first), and the released stacks are always its tail: a trim walks only
 * the stacks before them.  Chunks are unmapped at hub
 * teardown (usock__stack_drain), when all their stacks are free.
 *
 * Everything is per thread (a task's stack is taken and given back on the
 * thread of its hub); only the count of guarded stacks is shared.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef USOCK_VALGRIND
#include <valgrind/valgrind.h>
#endif

#include "base.h"
#ifdef USOCK__ASAN
#include <sanitizer/asan_interface.h>
#endif

#include "reactor.h"
#include "stack.h"

#ifndef MAP_STACK
#define MAP_STACK 0
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

#define NS_PER_S 1000000000LL

struct chunk;

struct usock__slot {
    struct usock__slot *next; /* in the free list */
    struct chunk *chunk;
    unsigned vgid;
    unsigned epoch;           /* cache.epoch when it was last freed */
    unsigned char released;   /* pages below the top given back */
};

struct pool;

struct chunk {
    struct chunk *next;       /* the pool's chunks */
    struct pool *pool;
    char *base;               /* the mapping */
    size_t len;
    unsigned nslots, fresh;   /* slots; the first never handed out */
    unsigned used;            /* slots handed out now */
    unsigned char guarded;
    struct usock__slot slots[]; /* slot i is at base + i * (page + size) */
};

struct pool {
    struct pool *next;
    size_t size;              /* usable bytes of its stacks */
    struct usock__slot *free; /* most recently freed first */
    size_t nkept;             /* free stacks at the head not released */
    struct chunk *chunks;     /* the newest first; only it has fresh slots */
};

struct cache {
    struct pool *pools;       /* the most recently used first */
    unsigned puts;            /* puts since the clock was last looked at */
    unsigned epoch;           /* trims so far */
    int64_t last_trim;
};

static __thread struct cache cache __attribute__((tls_model("initial-exec")));

/* Guarded stacks in the process, and the auto mode's budget for them. */
static size_t guarded_stacks;
static size_t guard_budget;

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

/* The auto mode's budget: a quarter of vm.max_map_count, read once. */
static size_t budget(void)
{
    size_t b = __atomic_load_n(&guard_budget, __ATOMIC_RELAXED);

    if (b == 0) {
        unsigned long max = 65530;
        FILE *f = fopen("/proc/sys/vm/max_map_count", "re");

        if (f) {
            if (fscanf(f, "%lu", &max) != 1) {
                max = 65530;
            }
            fclose(f);
        }
        b = max / 4 > 0 ? max / 4 : 1;
        __atomic_store_n(&guard_budget, b, __ATOMIC_RELAXED);
    }
    return b;
}

/* Whether a new chunk of n slots gets a protected guard page per slot;
 * reserves them in the process's count when it does. */
static int want_guards(unsigned n)
{
    const char *v = getenv("USOCKET_STACK_GUARD");

    if (v && strcmp(v, "0") == 0) {
        return 0;
    }
    if (v && strcmp(v, "1") == 0) {
        __atomic_add_fetch(&guarded_stacks, n, __ATOMIC_RELAXED);
        return 1;
    }
    if (__atomic_add_fetch(&guarded_stacks, n, __ATOMIC_RELAXED) <= budget()) {
        return 1;
    }
    __atomic_sub_fetch(&guarded_stacks, n, __ATOMIC_RELAXED);
    return 0;
}

static size_t slot_bytes(size_t size)
{
    return size + usock__page_size();
}

static char *slot_base(const struct usock__slot *s)
{
    const struct chunk *c = s->chunk;

    return c->base + (size_t)(s - c->slots) * slot_bytes(c->pool->size);
}

/* Under AddressSanitizer, clears the poison that the frames of a task
 * left on its stack: the task never returned through them, so the
 * redzones would otherwise trip the next user of the stack. */
static void unpoison(const struct usock__stack *st)
{
#ifdef USOCK__ASAN
    ASAN_UNPOISON_MEMORY_REGION(st->lo, st->size);
#else
    (void)st;
#endif
}

/* Maps a new chunk for pool p.  NULL with errno ENOMEM. */
static struct chunk *new_chunk(struct pool *p)
{
    size_t page = usock__page_size(), sb = slot_bytes(p->size);
    size_t n = USOCK__CHUNK_BYTES / sb;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK;
    struct chunk *c;

    n = n < 1 ? 1 : n > USOCK__CHUNK_SLOTS ? USOCK__CHUNK_SLOTS : n;
    c = calloc(1, sizeof(*c) + n * sizeof(c->slots[0]));
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    c->pool = p;
    c->nslots = (unsigned)n;
    c->len = n * sb;
    c->base = mmap(NULL, c->len, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (c->base == MAP_FAILED) {
        free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->guarded = (unsigned char)want_guards(c->nslots);
    for (unsigned i = 0; i < (c->guarded ? c->nslots : 1); i++) {
        if (mprotect(c->base + i * sb, page, PROT_NONE) != 0) {
            if (c->guarded) {
                __atomic_sub_fetch(&guarded_stacks, c->nslots,
                                   __ATOMIC_RELAXED);
            }
            (void)munmap(c->base, c->len);
            free(c);
            errno = ENOMEM;
            return NULL;
        }
    }
    for (unsigned i = 0; i < c->nslots; i++) {
        c->slots[i].chunk = c;
#ifdef USOCK_VALGRIND
        char *lo = c->base + i * sb + page;
        c->slots[i].vgid = VALGRIND_STACK_REGISTER(lo, lo + p->size);
#endif
    }
    c->next = p->chunks;
    p->chunks = c;
    return c;
}

static void unmap_chunk(struct chunk *c)
{
#ifdef USOCK_VALGRIND
    for (unsigned i = 0; i < c->nslots; i++) {
        VALGRIND_STACK_DEREGISTER(c->slots[i].vgid);
    }
#endif
    if (c->guarded) {
        __atomic_sub_fetch(&guarded_stacks, c->nslots, __ATOMIC_RELAXED);
    }
    (void)munmap(c->base, c->len);
    free(c);
}

/* The pool of `size`, moved to the front; created when missing. */
static struct pool *pool_of(size_t size)
{
    struct pool **link = &cache.pools, *p = cache.pools;

    if (p && p->size == size) {
        return p;
    }
    for (; *link; link = &(*link)->next) {
        if ((*link)->size == size) {
            p = *link;
            *link = p->next;
            p->next = cache.pools;
            cache.pools = p;
            return p;
        }
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        return NULL;
    }
    p->size = size;
    p->next = cache.pools;
    cache.pools = p;
    return p;
}

/* Gives `st` a stack of at least `size` usable bytes, rounded up to whole
 * pages (a size of 0 gets one page): the most recently freed one of that
 * size when there is one, else a chunk's next fresh slot, else a new
 * chunk's first.  Returns 0, or -1 with errno ENOMEM when size exceeds
 * USOCK__STACK_MAX or the system is out of memory or mappings. */
int usock__stack_get(struct usock__stack *st, size_t size)
{
    size_t page = usock__page_size();
    struct usock__slot *s;
    struct pool *p;
    struct chunk *c;

    if (size > USOCK__STACK_MAX) {
        errno = ENOMEM;
        return -1;
    }
    size = size == 0 ? page : (size + page - 1) & ~(page - 1);
    p = pool_of(size);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    s = p->free;
    if (s) {
        p->free = s->next;
        if (!s->released) {
            p->nkept--;
        }
    } else {
        c = p->chunks;
        if (!c || c->fresh == c->nslots) {
            c = new_chunk(p);
            if (!c) {
                return -1;
            }
        }
        s = &c->slots[c->fresh++];
    }
    s->chunk->used++;
    st->base = slot_base(s);
    st->lo = (char *)st->base + page;
    st->size = size;
    st->vgid = s->vgid;
    st->slot = s;
    return 0;
}

/* Returns the stack to its free list.  A NULL or empty `st` is ignored;
 * `st` itself is cleared either way. */
void usock__stack_put(struct usock__stack *st)
{
    struct usock__slot *s;
    struct pool *p;

    if (st == NULL || st->base == NULL) {
        return;
    }
    s = st->slot;
    p = s->chunk->pool;
    unpoison(st);
    s->chunk->used--;
    s->released = 0;
    s->epoch = cache.epoch;
    s->next = p->free;
    p->free = s;
    p->nkept++;
    *st = (struct usock__stack){0};
    if (p->nkept > USOCK__STACK_HOT && (++cache.puts & 63) == 0) {
        int64_t now = usock__clock_ns();

        if (now - cache.last_trim >= NS_PER_S) {
            usock__stack_trim(0);
        }
    }
}

size_t usock__stack_trim(int all)
{
    size_t page = usock__page_size(), done = 0;
    unsigned old = cache.epoch++;

    cache.last_trim = usock__clock_ns();
    for (struct pool *p = cache.pools; p; p = p->next) {
        struct usock__slot *s = p->free;
        size_t i = 0;

        for (; s && i < USOCK__STACK_HOT && !s->released; s = s->next) {
            i++;
        }
        /* The list is in the order of the puts, newest first: skip the
         * stacks freed since the last trim (a churn of short tasks keeps
         * reusing those; releasing them would only make it fault). */
        while (!all && s && !s->released && s->epoch == old) {
            s = s->next;
        }
        for (; s && !s->released; s = s->next) {
            /* Everything but the top page, where the next task's record
             * and first frames go anyway. */
            if (p->size > page) {
                (void)madvise(slot_base(s) + page, p->size - page,
                              MADV_DONTNEED);
            }
            s->released = 1;
            p->nkept--;
            done++;
        }
    }
    return done;
}

/* Unmaps every chunk of this thread whose stacks are all free, and the
 * pools left without chunks. */
void usock__stack_drain(void)
{
    struct pool **pl = &cache.pools;

    while (*pl) {
        struct pool *p = *pl;
        struct usock__slot **sl = &p->free;
        struct chunk **cl = &p->chunks;

        /* Live stacks may remain (not at a normal teardown): the free
         * slots of the chunks that stay mapped stay listed, in order. */
        p->nkept = 0;
        while (*sl) {
            if ((*sl)->chunk->used == 0) {
                *sl = (*sl)->next;
            } else {
                p->nkept += !(*sl)->released;
                sl = &(*sl)->next;
            }
        }
        while (*cl) {
            struct chunk *c = *cl;

            if (c->used == 0) {
                *cl = c->next;
                unmap_chunk(c);
            } else {
                cl = &c->next;
            }
        }
        if (p->chunks == NULL) {
            *pl = p->next;
            free(p);
        } else {
            pl = &p->next;
        }
    }
}

int usock__stack_guarded(const struct usock__stack *st)
{
    return st && st->slot && st->slot->chunk->guarded;
}
