/*
 * Suite "ctx": the context switch (src/ctx_*.S, src/ctx_ucontext.c) and the
 * task stacks (src/stack.c), with no hub and no sockets.
 *
 * Code running inside a context never calls ck_assert: it records what it
 * saw in globals, and the main context asserts after switching back, so a
 * failure never unwinds across stacks.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx.h"
#include "stack.h"

/* A context with its own stack. */
struct coro {
    struct usock__ctx ctx;
    struct usock__stack st;
};

static struct usock__ctx main_ctx;

static void coro_start(struct coro *c, size_t size, void (*fn)(void *),
                       void *arg)
{
    ck_assert_int_eq(usock__stack_get(&c->st, size), 0);
    usock__ctx_make(&c->ctx, c->st.lo, c->st.size, fn, arg);
}

static int on_stack(const struct usock__stack *st, const void *p)
{
    const char *c = p;

    return c >= (const char *)st->lo && c < (const char *)st->lo + st->size;
}

/* Hides a value from the optimiser, so it cannot assume what it knows
 * about the stack alignment or about a constant. */
static uintptr_t launder(uintptr_t v)
{
    __asm__ volatile("" : "+r"(v));
    return v;
}

/* ==========================================================================
 *  Ping-pong: main -> A -> main -> B -> main, a million rounds
 * ========================================================================== */

#define PP_ROUNDS 1000000UL

static struct coro pp_a, pp_b;
static unsigned long pp_counter;
static long pp_bad_step = -1;
static void *pp_arg_seen[2];

/* One step of the exchange: the counter must be at `want`. */
static void pp_step(unsigned long want)
{
    if (pp_counter != want && pp_bad_step < 0) {
        pp_bad_step = (long)want;
    }
    pp_counter++;
}

static void pp_a_fn(void *arg)
{
    pp_arg_seen[0] = arg;
    for (unsigned long i = 0;; i++) {
        pp_step(4 * i);
        usock__ctx_switch(&pp_a.ctx, &main_ctx);
    }
}

static void pp_b_fn(void *arg)
{
    pp_arg_seen[1] = arg;
    for (unsigned long i = 0;; i++) {
        pp_step(4 * i + 2);
        usock__ctx_switch(&pp_b.ctx, &main_ctx);
    }
}

START_TEST(test_ping_pong)
{
    coro_start(&pp_a, USOCK__STACK_DEFAULT, pp_a_fn, &pp_a);
    coro_start(&pp_b, USOCK__STACK_DEFAULT, pp_b_fn, &pp_b);
    for (unsigned long i = 0; i < PP_ROUNDS; i++) {
        usock__ctx_switch(&main_ctx, &pp_a.ctx);
        pp_step(4 * i + 1);
        usock__ctx_switch(&main_ctx, &pp_b.ctx);
        pp_step(4 * i + 3);
    }
    ck_assert_ptr_eq(pp_arg_seen[0], &pp_a);
    ck_assert_ptr_eq(pp_arg_seen[1], &pp_b);
    ck_assert_msg(pp_bad_step < 0, "counter wrong at step %ld", pp_bad_step);
    ck_assert_uint_eq(pp_counter, 4 * PP_ROUNDS);
    usock__stack_put(&pp_a.st);
    usock__stack_put(&pp_b.st);
    usock__stack_drain();
}
END_TEST

/* ==========================================================================
 *  Round robin over 1000 contexts, each checking its own locals
 * ========================================================================== */

#define RR_N 1000
#define RR_ROUNDS 20

struct rr {
    struct coro c;
    unsigned id;
};

static struct rr *rr;
static unsigned long rr_turn;
static unsigned long rr_bad;
static unsigned rr_not_own_stack;

static void rr_fn(void *arg)
{
    struct rr *me = arg;
    unsigned id = me->id;
    volatile uint64_t locals[8];
    uint64_t in_reg = launder(id) * 0x9E3779B97F4A7C15ULL;
    struct usock__ctx *next;

    for (unsigned k = 0; k < 8; k++) {
        locals[k] = (uint64_t)id * 1000 + k;
    }
    if (!on_stack(&me->c.st, (const void *)locals)) {
        rr_not_own_stack++;
    }
    next = id + 1 < RR_N ? &rr[id + 1].c.ctx : &main_ctx;
    for (unsigned long r = 0;; r++) {
        int ok = rr_turn == r * RR_N + id;

        for (unsigned k = 0; k < 8; k++) {
            ok = ok && locals[k] == (uint64_t)id * 1000 + k;
        }
        ok = ok && in_reg == (uint64_t)id * 0x9E3779B97F4A7C15ULL;
        rr_bad += !ok;
        rr_turn++;
        usock__ctx_switch(&me->c.ctx, next);
    }
}

START_TEST(test_round_robin)
{
    rr = calloc(RR_N, sizeof *rr);
    ck_assert_ptr_nonnull(rr);
    for (unsigned i = 0; i < RR_N; i++) {
        rr[i].id = i;
        coro_start(&rr[i].c, USOCK__STACK_MIN, rr_fn, &rr[i]);
    }
    for (unsigned long r = 0; r < RR_ROUNDS; r++) {
        usock__ctx_switch(&main_ctx, &rr[0].c.ctx);
        ck_assert_uint_eq(rr_turn, (r + 1) * RR_N);
    }
    ck_assert_uint_eq(rr_bad, 0);
    ck_assert_uint_eq(rr_not_own_stack, 0);
    for (unsigned i = 0; i < RR_N; i++) {
        usock__stack_put(&rr[i].c.st);
    }
    usock__stack_drain();
    free(rr);
}
END_TEST

/* ==========================================================================
 *  Callee-saved registers and floating-point control state
 * ========================================================================== */

static struct coro cs;
static volatile uint64_t cs_seed = 0x1234567;
static unsigned cs_bad_round;
static unsigned cs_resumed;

/* Puts garbage into every callee-saved register right before switching
 * back, so the main context only sees its own values if the switch really
 * restored them. */
static void clobber_callee_saved(void)
{
#if defined(__x86_64__)
    __asm__ volatile("movq $-1, %%rbx\n\tmovq $-1, %%r12\n\t"
                     "movq $-1, %%r13\n\tmovq $-1, %%r14\n\t"
                     "movq $-1, %%r15\n\t"
                     ::: "rbx", "r12", "r13", "r14", "r15");
#elif defined(__aarch64__)
    __asm__ volatile("mov x19, #-1\n\tmov x20, #-1\n\tmov x21, #-1\n\t"
                     "mov x22, #-1\n\tmov x23, #-1\n\tmov x24, #-1\n\t"
                     "mov x25, #-1\n\tmov x26, #-1\n\tmov x27, #-1\n\t"
                     "mov x28, #-1\n\tfmov d8, xzr\n\tfmov d9, xzr\n\t"
                     "fmov d10, xzr\n\tfmov d11, xzr\n\tfmov d12, xzr\n\t"
                     "fmov d13, xzr\n\tfmov d14, xzr\n\tfmov d15, xzr\n\t"
                     ::: "x19", "x20", "x21", "x22", "x23", "x24", "x25",
                     "x26", "x27", "x28", "d8", "d9", "d10", "d11", "d12",
                     "d13", "d14", "d15");
#endif
}

/* Runs in its own rounding mode (upward) and checks it keeps it while the
 * main context runs in round-to-nearest. */
static void cs_fn(void *arg)
{
    fesetround(FE_UPWARD);
    for (;;) {
        uint64_t x = cs_seed;
        double third = 1.0 / (double)(x % 7 + 3);

        if (fegetround() != FE_UPWARD || third == 0.0) {
            cs_bad_round++;
        }
        cs_resumed++;
        clobber_callee_saved();
        usock__ctx_switch(&cs.ctx, &main_ctx);
    }
}

/* One switch with fourteen live integers and two doubles in the caller,
 * more than there are callee-saved registers, so some live in registers
 * and some in spill slots on the main stack.
 * Returns the number of values that did not survive. */
static int cs_once(void)
{
    /* Laundered, so the compiler must keep all fourteen, not just s. */
    uint64_t s = cs_seed;
    uint64_t a = launder(s * 3), b = launder(s * 5 + 1);
    uint64_t c = launder(s * 7 + 2), d = launder(s * 11 + 3);
    uint64_t e = launder(s * 13 + 4), f = launder(s * 17 + 5);
    uint64_t g = launder(s * 19 + 6), h = launder(s * 23 + 7);
    uint64_t i = launder(s * 29 + 8), j = launder(s * 31 + 9);
    uint64_t k = launder(s * 37 + 10), l = launder(s * 41 + 11);
    uint64_t m = launder(s * 43 + 12), n = launder(s * 47 + 13);
    double x = (double)s / 3.0, y = (double)s * 0.1;
    int bad = 0;

    usock__ctx_switch(&main_ctx, &cs.ctx);
    s = cs_seed;
    bad += a != s * 3 || b != s * 5 + 1 || c != s * 7 + 2;
    bad += d != s * 11 + 3 || e != s * 13 + 4 || f != s * 17 + 5;
    bad += g != s * 19 + 6 || h != s * 23 + 7 || i != s * 29 + 8;
    bad += j != s * 31 + 9 || k != s * 37 + 10 || l != s * 41 + 11;
    bad += m != s * 43 + 12 || n != s * 47 + 13;
    /* Recomputed after the switch: equal only in the same rounding mode. */
    bad += x != (double)s / 3.0 || y != (double)s * 0.1;
    return bad;
}

START_TEST(test_callee_saved)
{
    int bad = 0;

    ck_assert_int_eq(fegetround(), FE_TONEAREST);
    coro_start(&cs, USOCK__STACK_DEFAULT, cs_fn, NULL);
    for (unsigned r = 0; r < 1000; r++) {
        cs_seed = cs_seed * 6364136223846793005ULL + 1442695040888963407ULL;
        bad += cs_once();
        ck_assert_int_eq(fegetround(), FE_TONEAREST);
    }
    ck_assert_int_eq(bad, 0);
    ck_assert_uint_eq(cs_resumed, 1000);
    ck_assert_uint_eq(cs_bad_round, 0);
    usock__stack_put(&cs.st);
    usock__stack_drain();
}
END_TEST

/* ==========================================================================
 *  Deep recursion on a 64 KiB stack, stack alignment, re-making a context
 * ========================================================================== */

static struct coro deep;
static uintptr_t deep_low;
static unsigned deep_depth;
static unsigned long deep_result;

/* 1 KiB frames that stay live across the recursive call, touched at both
 * ends so no frame can step over the guard page. */
__attribute__((noinline)) static unsigned long recurse(unsigned depth)
{
    volatile unsigned char buf[1024];
    unsigned long below;

    buf[0] = (unsigned char)depth;
    buf[sizeof buf - 1] = (unsigned char)depth;
    if ((uintptr_t)buf < deep_low) {
        deep_low = (uintptr_t)buf;
    }
    if (depth == 0) {
        return buf[0];
    }
    below = recurse(depth - 1);
    return below + buf[sizeof buf - 1];
}

static void deep_fn(void *arg)
{
    deep_result = recurse(deep_depth);
    for (;;) {
        usock__ctx_switch(&deep.ctx, &main_ctx);
    }
}

START_TEST(test_deep_recursion)
{
    uintptr_t top;

    coro_start(&deep, USOCK__STACK_DEFAULT, deep_fn, NULL);
    top = (uintptr_t)deep.st.lo + deep.st.size;
    deep_low = top;
    deep_depth = 32;
    usock__ctx_switch(&main_ctx, &deep.ctx);
    ck_assert_uint_eq(deep_result, 32 * 33 / 2);
    ck_assert_uint_ge(top - deep_low, 32 * 1024);
    ck_assert_uint_lt(top - deep_low, USOCK__STACK_DEFAULT);
    usock__stack_put(&deep.st);
}
END_TEST

/* Overruns the stack: must die with SIGSEGV on the guard page. */
START_TEST(test_guard_overrun)
{
    /* Sanitizers catch SIGSEGV and exit(1); the test wants the signal. */
    signal(SIGSEGV, SIG_DFL);
    coro_start(&deep, USOCK__STACK_DEFAULT, deep_fn, NULL);
    deep_low = UINTPTR_MAX;
    deep_depth = 1000;
    usock__ctx_switch(&main_ctx, &deep.ctx);
    ck_abort_msg("1 MiB of recursion fit in a 64 KiB stack");
}
END_TEST

/* A write just below the usable area hits the guard page. */
START_TEST(test_guard_touch)
{
    struct usock__stack st;

    signal(SIGSEGV, SIG_DFL);
    ck_assert_int_eq(usock__stack_get(&st, USOCK__STACK_MIN), 0);
    ((volatile char *)st.lo)[0] = 1;
    ((volatile char *)st.lo)[-1] = 1;
    ck_abort_msg("the guard page is writable");
}
END_TEST

static struct coro al;
static unsigned al_bad;
static unsigned al_entered;

__attribute__((noinline)) static void al_check(void)
{
    _Alignas(16) volatile char probe[16];

    probe[0] = 0;
    al_bad += launder((uintptr_t)probe) % 16 != 0;
    al_bad += launder((uintptr_t)__builtin_frame_address(0)) % 16 != 0;
}

static void al_fn(void *arg)
{
    _Alignas(16) volatile char probe[16];

    probe[0] = 0;
    al_entered++;
    al_bad += launder((uintptr_t)probe) % 16 != 0;
    al_bad += launder((uintptr_t)__builtin_frame_address(0)) % 16 != 0;
    al_bad += !on_stack(&al.st, (const void *)probe);
    al_check();
    for (;;) {
        usock__ctx_switch(&al.ctx, &main_ctx);
    }
}

/* The entry point sees an ABI-aligned stack whatever the alignment of the
 * top of the area handed to usock__ctx_make. */
START_TEST(test_alignment)
{
    ck_assert_int_eq(usock__stack_get(&al.st, USOCK__STACK_MIN), 0);
    for (size_t cut = 0; cut < 32; cut++) {
        usock__ctx_make(&al.ctx, al.st.lo, al.st.size - cut, al_fn, NULL);
        usock__ctx_switch(&main_ctx, &al.ctx);
    }
    ck_assert_uint_eq(al_entered, 32);
    ck_assert_uint_eq(al_bad, 0);
    usock__stack_put(&al.st);
}
END_TEST

static struct coro rm;
static uintptr_t rm_seen;

static void rm_fn(void *arg)
{
    rm_seen = (uintptr_t)arg;
    for (;;) {
        usock__ctx_switch(&rm.ctx, &main_ctx);
    }
}

/* A context abandoned while suspended can be re-made on the same stack,
 * as the hub does with cached stacks. */
START_TEST(test_remake)
{
    coro_start(&rm, USOCK__STACK_MIN, rm_fn, (void *)1);
    usock__ctx_switch(&main_ctx, &rm.ctx);
    ck_assert_uint_eq(rm_seen, 1);
    usock__ctx_switch(&main_ctx, &rm.ctx);
    ck_assert_uint_eq(rm_seen, 1);
    usock__ctx_make(&rm.ctx, rm.st.lo, rm.st.size, rm_fn, (void *)2);
    usock__ctx_switch(&main_ctx, &rm.ctx);
    ck_assert_uint_eq(rm_seen, 2);
    usock__stack_put(&rm.st);
    usock__stack_drain();
}
END_TEST

/* ==========================================================================
 *  Stacks: layout, rounding, cache
 * ========================================================================== */

/* The permissions ("rw-p", "---p") of the mapping holding addr, from
 * /proc/self/maps, into perms[5]; "" when nothing maps it. */
static void perms_at(const void *addr, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    unsigned long lo, hi, a = (unsigned long)(uintptr_t)addr;
    char line[512], p[5];

    perms[0] = '\0';
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && a >= lo &&
            a < hi) {
            memcpy(perms, p, 5);
            break;
        }
    }
    fclose(f);
}

/* Lines of /proc/self/maps: the process's kernel mappings. */
static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;

    ck_assert_ptr_nonnull(f);
    while ((c = getc(f)) != EOF) {
        n += c == '\n';
    }
    fclose(f);
    return n;
}

START_TEST(test_layout)
{
    size_t page = usock__page_size();
    struct usock__stack st;
    char perms[5];

    ck_assert_uint_eq(page, (size_t)sysconf(_SC_PAGESIZE));
    ck_assert_int_eq(usock__stack_get(&st, 9 * page), 0);
    ck_assert_uint_eq(st.size, 9 * page);
    ck_assert_uint_eq((uintptr_t)st.lo % page, 0);
    ck_assert_ptr_eq((char *)st.base + page, st.lo);
    /* Few stacks in the process: guarded, the guard page PROT_NONE. */
    ck_assert_int_eq(usock__stack_guarded(&st), 1);
    perms_at(st.base, perms);
    ck_assert_str_eq(perms, "---p");
    perms_at(st.lo, perms);
    ck_assert_str_eq(perms, "rw-p");
    perms_at((char *)st.lo + st.size - 1, perms);
    ck_assert_str_eq(perms, "rw-p");
    memset(st.lo, 0xa5, st.size);
    usock__stack_put(&st);
    ck_assert_ptr_null(st.base);
    usock__stack_drain();
    /* The chunk is gone. */
    perms_at((char *)st.lo, perms);
}
END_TEST

START_TEST(test_rounding)
{
    size_t page = usock__page_size();
    struct usock__stack st;

    ck_assert_int_eq(usock__stack_get(&st, 3 * page + 1), 0);
    ck_assert_uint_eq(st.size, 4 * page);
    usock__stack_put(&st);
    ck_assert_int_eq(usock__stack_get(&st, 5000), 0);
    ck_assert_uint_eq(st.size, (5000 + page - 1) / page * page);
    usock__stack_put(&st);
    ck_assert_int_eq(usock__stack_get(&st, 1), 0);
    ck_assert_uint_eq(st.size, page);
    usock__stack_put(&st);
    ck_assert_int_eq(usock__stack_get(&st, 0), 0);
    ck_assert_uint_eq(st.size, page);
    usock__stack_put(&st);
    errno = 0;
    ck_assert_int_eq(usock__stack_get(&st, USOCK__STACK_MAX + 1), -1);
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_int_eq(usock__stack_get(&st, SIZE_MAX), -1);
    ck_assert_int_eq(errno, ENOMEM);
    usock__stack_drain();
}
END_TEST

START_TEST(test_cache_reuse)
{
    size_t page = usock__page_size();
    struct usock__stack a, b, c;
    char perms[5];
    void *lo;

    usock__stack_drain();
    ck_assert_int_eq(usock__stack_get(&a, 7 * page), 0);
    lo = a.lo;
    usock__stack_put(&a);
    /* Another size never gets the freed stack. */
    ck_assert_int_eq(usock__stack_get(&b, 6 * page), 0);
    ck_assert_ptr_ne(b.lo, lo);
    ck_assert_int_eq(usock__stack_get(&c, 7 * page), 0);
    ck_assert_ptr_eq(c.lo, lo);
    ck_assert_uint_eq(c.size, 7 * page);
    usock__stack_put(&b);
    usock__stack_put(&c);
    usock__stack_drain();
    perms_at(lo, perms);
    ck_assert_str_eq(perms, "");
}
END_TEST

#define MANY 1000

/* Every freed stack comes back, most recently freed first, and nothing new
 * is mapped while free ones are left. */
START_TEST(test_cache_many)
{
    size_t size = 40 * usock__page_size();
    static struct usock__stack st[MANY];
    static void *lo[MANY];
    long maps;

    usock__stack_drain();
    for (int i = 0; i < MANY; i++) {
        ck_assert_int_eq(usock__stack_get(&st[i], size), 0);
        lo[i] = st[i].lo;
    }
    maps = count_maps();
    for (int i = 0; i < MANY; i++) {
        usock__stack_put(&st[i]);
    }
    for (int i = MANY - 1; i >= 0; i--) {
        ck_assert_int_eq(usock__stack_get(&st[i], size), 0);
        ck_assert_ptr_eq(st[i].lo, lo[i]);
    }
    /* (A few mappings of slack for the sanitizers' own allocations.) */
    ck_assert_int_le(count_maps(), maps + 8);
    for (int i = 0; i < MANY; i++) {
        usock__stack_put(&st[i]);
    }
    usock__stack_drain();
    ck_assert_int_lt(count_maps(), maps);
}
END_TEST

/* Resident pages of [p, p + len), by mincore. */
static size_t resident(const void *p, size_t len)
{
    size_t page = usock__page_size(), n = len / page, r = 0;
    unsigned char vec[64];

    ck_assert_uint_le(n, sizeof vec);
    ck_assert_int_eq(mincore((void *)p, len, vec), 0);
    for (size_t i = 0; i < n; i++) {
        r += vec[i] & 1;
    }
    return r;
}

#define TRIM_N 200

/* Beyond the USOCK__STACK_HOT most recently freed, free stacks give their
 * pages back, all but the top one; they still work afterwards. */
START_TEST(test_trim)
{
    size_t page = usock__page_size(), size = 16 * page;
    static struct usock__stack st[TRIM_N];
    static void *lo[TRIM_N];

    usock__stack_drain();
    for (int i = 0; i < TRIM_N; i++) {
        ck_assert_int_eq(usock__stack_get(&st[i], size), 0);
        memset(st[i].lo, 0x5a, size);
        lo[i] = st[i].lo;
    }
    for (int i = 0; i < TRIM_N; i++) {
        ck_assert_uint_eq(resident(lo[i], size), 16);
        usock__stack_put(&st[i]);
    }
    /* put may have trimmed part of them already (at most once a second). */
    ck_assert_uint_le(usock__stack_trim(1), TRIM_N - USOCK__STACK_HOT);
    /* The last freed are the hot set. */
    for (int i = 0; i < TRIM_N; i++) {
        size_t want = i >= TRIM_N - USOCK__STACK_HOT ? 16 : 1;

        ck_assert_msg(resident(lo[i], size) == want,
                      "stack %d: %zu pages resident, expected %zu", i,
                      resident(lo[i], size), want);
    }
    ck_assert_uint_eq(usock__stack_trim(1), 0);
    for (int i = TRIM_N - 1; i >= 0; i--) {
        ck_assert_int_eq(usock__stack_get(&st[i], size), 0);
        ck_assert_ptr_eq(st[i].lo, lo[i]);
        /* Released pages read back as zeros; the top page was kept. */
        ck_assert_int_eq(((unsigned char *)st[i].lo)[0],
                         i >= TRIM_N - USOCK__STACK_HOT ? 0x5a : 0);
        ck_assert_int_eq(((unsigned char *)st[i].lo)[size - 1], 0x5a);
        memset(st[i].lo, 1, size);
    }
    for (int i = 0; i < TRIM_N; i++) {
        usock__stack_put(&st[i]);
    }
    usock__stack_drain();
}
END_TEST

/* A trim leaves the stacks freed since the previous trim alone (a churn
 * of short tasks keeps reusing them); the next one releases them. */
START_TEST(test_trim_age)
{
    size_t page = usock__page_size(), size = 16 * page;
    static struct usock__stack st[TRIM_N];

    usock__stack_drain();
    for (int i = 0; i < TRIM_N; i++) {
        ck_assert_int_eq(usock__stack_get(&st[i], size), 0);
    }
    for (int i = 0; i < TRIM_N; i++) {
        usock__stack_put(&st[i]);
    }
    (void)usock__stack_trim(1);
    for (int i = 0; i < TRIM_N; i++) {
        ck_assert_int_eq(usock__stack_get(&st[i], size), 0);
        memset(st[i].lo, 0x5a, size);
    }
    for (int i = 0; i < TRIM_N; i++) {
        usock__stack_put(&st[i]);
    }
    ck_assert_uint_eq(usock__stack_trim(0), 0);
    ck_assert_uint_eq(usock__stack_trim(0), TRIM_N - USOCK__STACK_HOT);
    ck_assert_uint_eq(usock__stack_trim(0), 0);
    usock__stack_drain();
}
END_TEST

#define HUGE_N 100000

/* 100,000 stacks (never touched) under the system's vm.max_map_count,
 * whatever it is: with the default 65,530 that was impossible at two
 * mappings per stack.  The first ones are guarded, the last ones not (auto
 * mode). */
START_TEST(test_100k_stacks)
{
    struct usock__stack *st = calloc(HUGE_N, sizeof *st);
    long before = count_maps(), during;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long max = 65530;

    ck_assert_ptr_nonnull(st);
    if (f) {
        ck_assert_int_eq(fscanf(f, "%ld", &max), 1);
        fclose(f);
    }
    for (int i = 0; i < HUGE_N; i++) {
        ck_assert_msg(usock__stack_get(&st[i], USOCK__STACK_DEFAULT) == 0,
                      "stack %d: %s", i, strerror(errno));
    }
    during = count_maps();
    ck_assert_msg(during < max, "%ld mappings, vm.max_map_count %ld", during,
                  max);
    ck_assert_int_eq(usock__stack_guarded(&st[0]), 1);
    if (max / 4 < HUGE_N) {
        ck_assert_int_eq(usock__stack_guarded(&st[HUGE_N - 1]), 0);
    }
    for (int i = 0; i < HUGE_N; i++) {
        usock__stack_put(&st[i]);
    }
    usock__stack_drain();
    ck_assert_int_le(count_maps(), before + 16);
    free(st);
}
END_TEST

/* USOCKET_STACK_GUARD=0: no stack of a chunk but its first has a
 * protected guard page. */
START_TEST(test_guard_off)
{
    size_t page = usock__page_size();
    struct usock__stack a, b;
    char perms[5];

    setenv("USOCKET_STACK_GUARD", "0", 1);
    ck_assert_int_eq(usock__stack_get(&a, 5 * page), 0);
    ck_assert_int_eq(usock__stack_get(&b, 5 * page), 0);
    ck_assert_int_eq(usock__stack_guarded(&a), 0);
    ck_assert_ptr_eq(b.base, (char *)a.lo + a.size);
    perms_at(a.base, perms);
    ck_assert_str_eq(perms, "---p");
    perms_at(b.base, perms);
    ck_assert_str_eq(perms, "rw-p");
    ((volatile char *)b.lo)[-1] = 1; /* the overflow slack: no fault */
    usock__stack_put(&a);
    usock__stack_put(&b);
    usock__stack_drain();
    unsetenv("USOCKET_STACK_GUARD");
}
END_TEST

/* USOCKET_STACK_GUARD=1: guarded whatever the count. */
START_TEST(test_guard_on)
{
    size_t page = usock__page_size();
    struct usock__stack a, b;
    char perms[5];

    setenv("USOCKET_STACK_GUARD", "1", 1);
    ck_assert_int_eq(usock__stack_get(&a, 5 * page), 0);
    ck_assert_int_eq(usock__stack_get(&b, 5 * page), 0);
    ck_assert_int_eq(usock__stack_guarded(&b), 1);
    perms_at(b.base, perms);
    ck_assert_str_eq(perms, "---p");
    usock__stack_put(&a);
    usock__stack_put(&b);
    usock__stack_drain();
    unsetenv("USOCKET_STACK_GUARD");
}
END_TEST

static void *other_thread(void *arg)
{
    struct usock__stack st;
    void *lo;

    if (usock__stack_get(&st, 11 * usock__page_size()) != 0) {
        return NULL;
    }
    lo = st.lo;
    usock__stack_put(&st);
    usock__stack_drain();
    return lo;
}

/* The cache is per thread: a stack cached by the main thread is not handed
 * to another thread. */
START_TEST(test_cache_per_thread)
{
    struct usock__stack st;
    pthread_t t;
    void *lo, *theirs = NULL;

    ck_assert_int_eq(usock__stack_get(&st, 11 * usock__page_size()), 0);
    lo = st.lo;
    usock__stack_put(&st);
    ck_assert_int_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &theirs), 0);
    ck_assert_ptr_nonnull(theirs);
    ck_assert_ptr_ne(theirs, lo);
    ck_assert_int_eq(usock__stack_get(&st, 11 * usock__page_size()), 0);
    ck_assert_ptr_eq(st.lo, lo);
    usock__stack_put(&st);
    usock__stack_drain();
}
END_TEST

/* ==========================================================================
 *  The suite
 * ========================================================================== */

static int no_fork(void)
{
    const char *v = getenv("CK_FORK");

    return v != NULL && strcmp(v, "no") == 0;
}

static Suite *ctx_suite(void)
{
    Suite *s = suite_create("ctx");
    TCase *sw = tcase_create("switch");
    TCase *st = tcase_create("stack");

    tcase_set_timeout(sw, 60);
    tcase_add_test(sw, test_ping_pong);
    tcase_add_test(sw, test_round_robin);
    tcase_add_test(sw, test_callee_saved);
    tcase_add_test(sw, test_deep_recursion);
    tcase_add_test(sw, test_alignment);
    tcase_add_test(sw, test_remake);
    suite_add_tcase(s, sw);

    tcase_set_timeout(st, 30);
    tcase_add_test(st, test_layout);
    tcase_add_test(st, test_rounding);
    tcase_add_test(st, test_cache_reuse);
    tcase_add_test(st, test_cache_many);
    tcase_add_test(st, test_trim);
    tcase_add_test(st, test_trim_age);
    tcase_add_test(st, test_guard_off);
    tcase_add_test(st, test_guard_on);
    tcase_add_test(st, test_cache_per_thread);
    suite_add_tcase(s, st);

    /* 100,000 stacks: too many mappings for valgrind (VG_N_SEGMENTS), so
     * tagged "slow", which make check-valgrind leaves out. */
    TCase *many = tcase_create("stack_100k");
    tcase_set_tags(many, "slow");
    tcase_set_timeout(many, 60);
    tcase_add_test(many, test_100k_stacks);
    suite_add_tcase(s, many);

    /* Dying on a signal needs a forked child per test (CK_FORK=no runs,
     * such as valgrind's, leave this tcase out; it is also tagged "guard"
     * for CK_EXCLUDE_TAGS). */
    if (!no_fork()) {
        TCase *guard = tcase_create("guard");

        tcase_set_tags(guard, "guard");
        tcase_set_timeout(guard, 30);
        tcase_add_test_raise_signal(guard, test_guard_overrun, SIGSEGV);
        tcase_add_test_raise_signal(guard, test_guard_touch, SIGSEGV);
        suite_add_tcase(s, guard);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ctx_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
