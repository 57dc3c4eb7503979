/*
 * Suite "heap": the timer heap of src/heap.h on its own (no reactor, no
 * sockets).  "Pop" is top followed by remove.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "heap.h"

struct item {
    struct usock__heap_node node; /* first member: cast back from the node */
    int id;
    int removed;
    int popped;
};

/*
 * The loops over many nodes count mismatches and assert once at the end:
 * Check records every passing assertion, which is slow under valgrind.
 */

/* A small deterministic generator (xorshift64), so failures reproduce. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static struct item *pop(struct usock__heap *h)
{
    struct usock__heap_node *n = usock__heap_top(h);

    if (n != NULL) {
        usock__heap_remove(h, n);
    }
    return (struct item *)n;
}

/* Nonzero when p may come out before c: an earlier key, or the same key
 * pushed earlier. */
static int in_order(const struct usock__heap_node *p,
                    const struct usock__heap_node *c)
{
    return p->key < c->key || (p->key == c->key && p->seq < c->seq);
}

/* Every node is at its recorded index and no child comes before its
 * parent. */
static void check_shape(const struct usock__heap *h)
{
    size_t i, bad = 0;

    ck_assert_uint_le(h->n, h->cap);
    for (i = 0; i < h->n; i++) {
        bad += h->a[i]->index != i;
        bad += i > 0 && !in_order(h->a[(i - 1) / 2], h->a[i]);
    }
    ck_assert_uint_eq(bad, 0);
}

/* Push it[0..n); every push succeeds and marks its node active. */
static void push_all(struct usock__heap *h, struct item *it, size_t n)
{
    size_t i, bad = 0;

    for (i = 0; i < n; i++) {
        bad += usock__heap_push(h, &it[i].node) != 0;
        bad += !usock__heap_node_active(&it[i].node);
    }
    ck_assert_uint_eq(bad, 0);
}

static struct item *make_items(size_t n, int64_t key_range)
{
    struct item *it = calloc(n, sizeof(*it));
    size_t i;

    ck_assert_ptr_nonnull(it);
    for (i = 0; i < n; i++) {
        usock__heap_node_init(&it[i].node);
        it[i].node.key = (int64_t)(rnd() % (uint64_t)key_range);
        it[i].id = (int)i;
    }
    return it;
}

/* Pop everything: keys never decrease, equal keys come in push order, and
 * exactly `expect` items come out, none of them removed before. */
static void drain_in_order(struct usock__heap *h, size_t expect)
{
    struct item *prev = NULL, *it;
    size_t count = 0, bad = 0;

    while ((it = pop(h)) != NULL) {
        bad += it->removed || it->popped;
        bad += it->node.index != USOCK__HEAP_NONE;
        bad += prev != NULL && !in_order(&prev->node, &it->node);
        it->popped = 1;
        prev = it;
        count++;
    }
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_eq(count, expect);
    ck_assert_uint_eq(h->n, 0);
    ck_assert_ptr_null(usock__heap_top(h));
}

START_TEST(random_keys_pop_in_order)
{
    enum { N = 100000 };
    struct usock__heap h;
    struct item *it = make_items(N, 1000000);
    size_t i, missed = 0;

    usock__heap_init(&h);
    push_all(&h, it, N);
    ck_assert_uint_eq(h.n, N);
    check_shape(&h);
    drain_in_order(&h, N);
    for (i = 0; i < N; i++) {
        missed += !it[i].popped;
    }
    ck_assert_uint_eq(missed, 0);
    usock__heap_free(&h);
    free(it);
}
END_TEST

START_TEST(remove_arbitrary_nodes)
{
    enum { N = 20000 };
    struct usock__heap h;
    struct item *it = make_items(N, 5000);
    size_t *order = malloc(N * sizeof(*order));
    size_t i, removed = 0, bad = 0;

    ck_assert_ptr_nonnull(order);
    usock__heap_init(&h);
    push_all(&h, it, N);
    for (i = 0; i < N; i++) {
        order[i] = i;
    }
    for (i = N - 1; i > 0; i--) { /* Fisher-Yates shuffle */
        size_t j = rnd() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (i = 0; i < N / 2; i++) {
        struct item *victim = &it[order[i]];
        usock__heap_remove(&h, &victim->node);
        victim->removed = 1;
        removed++;
        bad += victim->node.index != USOCK__HEAP_NONE;
        bad += h.n != N - removed;
        if (i % 1000 == 0) {
            check_shape(&h);
        }
    }
    ck_assert_uint_eq(bad, 0);
    check_shape(&h);
    /* Removing them again changes nothing. */
    usock__heap_remove(&h, &it[order[0]].node);
    ck_assert_uint_eq(h.n, N - removed);
    drain_in_order(&h, N - removed);
    for (i = 0; i < N; i++) {
        bad += it[i].popped == it[i].removed;
    }
    ck_assert_uint_eq(bad, 0);
    usock__heap_free(&h);
    free(order);
    free(it);
}
END_TEST

START_TEST(equal_keys_are_fifo)
{
    enum { N = 3000, KEYS = 3 };
    struct usock__heap h;
    struct item *it = make_items(N, 1);
    int *expect = malloc(N * sizeof(*expect));
    struct item *x;
    size_t i, e = 0, bad = 0;
    int k;

    ck_assert_ptr_nonnull(expect);
    usock__heap_init(&h);
    for (i = 0; i < N; i++) {
        it[i].node.key = (int64_t)(i % KEYS) * 10;
    }
    push_all(&h, it, N);
    /* Item 0 leaves and comes back: it is now the last of key 0. */
    usock__heap_remove(&h, &it[0].node);
    ck_assert_int_eq(usock__heap_push(&h, &it[0].node), 0);
    for (k = 0; k < KEYS; k++) {
        for (i = (size_t)k; i < N; i += KEYS) {
            if (i != 0) {
                expect[e++] = (int)i;
            }
        }
        if (k == 0) {
            expect[e++] = 0;
        }
    }
    ck_assert_uint_eq(e, N);
    for (e = 0; e < N && (x = pop(&h)) != NULL; e++) {
        bad += x->id != expect[e];
    }
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_eq(e, N);
    ck_assert_ptr_null(usock__heap_top(&h));
    usock__heap_free(&h);
    free(expect);
    free(it);
}
END_TEST

START_TEST(remove_non_member_is_noop)
{
    struct usock__heap h, other;
    struct item a = {.id = 1}, b = {.id = 2}, stranger = {.id = 3};

    usock__heap_init(&h);
    usock__heap_init(&other);
    usock__heap_node_init(&a.node);
    usock__heap_node_init(&b.node);
    usock__heap_node_init(&stranger.node);
    a.node.key = 5;
    b.node.key = 7;
    stranger.node.key = 1;

    /* Never pushed anywhere, into an empty heap. */
    usock__heap_remove(&h, &stranger.node);
    ck_assert_uint_eq(h.n, 0);
    ck_assert_uint_eq(stranger.node.index, USOCK__HEAP_NONE);

    ck_assert_int_eq(usock__heap_push(&h, &a.node), 0);
    ck_assert_int_eq(usock__heap_push(&other, &stranger.node), 0);
    ck_assert_int_eq(usock__heap_push(&h, &b.node), 0);
    /* A member of another heap, whose index is in range here. */
    ck_assert_uint_eq(stranger.node.index, 0);
    usock__heap_remove(&h, &stranger.node);
    ck_assert_uint_eq(h.n, 2);
    ck_assert_ptr_eq(usock__heap_top(&h), &a.node);
    ck_assert_uint_eq(other.n, 1);
    ck_assert_uint_eq(stranger.node.index, 0);
    check_shape(&h);

    /* Removed once, then again: the second time does nothing. */
    usock__heap_remove(&h, &a.node);
    usock__heap_remove(&h, &a.node);
    ck_assert_uint_eq(h.n, 1);
    ck_assert_ptr_eq(usock__heap_top(&h), &b.node);
    ck_assert_uint_eq(b.node.index, 0);

    usock__heap_free(&h);
    usock__heap_free(&other);
}
END_TEST

START_TEST(top_of_empty_is_null)
{
    struct usock__heap h;
    struct item a = {.id = 1};

    usock__heap_init(&h);
    ck_assert_ptr_null(usock__heap_top(&h));
    usock__heap_node_init(&a.node);
    ck_assert(!usock__heap_node_active(&a.node));
    a.node.key = 42;
    ck_assert_int_eq(usock__heap_push(&h, &a.node), 0);
    ck_assert_ptr_eq(usock__heap_top(&h), &a.node);
    ck_assert_ptr_eq(pop(&h), &a);
    ck_assert_ptr_null(usock__heap_top(&h));
    usock__heap_free(&h);
    /* A freed heap is empty and can be used again. */
    ck_assert_ptr_null(usock__heap_top(&h));
    ck_assert_int_eq(usock__heap_push(&h, &a.node), 0);
    ck_assert_ptr_eq(usock__heap_top(&h), &a.node);
    usock__heap_free(&h);
}
END_TEST

/* Under AddressSanitizer (make check-asan), a huge allocation aborts unless
 * ASan is told to fail it as malloc does.  ASan looks this hook up by name;
 * without ASan it is never called. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

/* A heap that claims to be full at a size the allocator cannot double:
 * push fails with ENOMEM and changes nothing (it would crash if it wrote
 * past the real one-slot array). */
static void check_push_fails(size_t cap)
{
    struct usock__heap h;
    struct usock__heap_node **real = malloc(sizeof(struct usock__heap_node *));
    struct item a = {.id = 1};

    ck_assert_ptr_nonnull(real);
    usock__heap_init(&h);
    h.a = real;
    h.n = h.cap = cap;
    h.seq = 77;
    usock__heap_node_init(&a.node);
    errno = 0;
    ck_assert_int_eq(usock__heap_push(&h, &a.node), -1);
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_ptr_eq(h.a, real);
    ck_assert_uint_eq(h.n, cap);
    ck_assert_uint_eq(h.cap, cap);
    ck_assert_uint_eq(h.seq, 77);
    ck_assert_uint_eq(a.node.index, USOCK__HEAP_NONE);
    free(real);
}

START_TEST(push_enomem_leaves_heap_unchanged)
{
    check_push_fails((size_t)1 << 58);  /* realloc fails */
    check_push_fails(SIZE_MAX / 2 + 1); /* doubling overflows */
}
END_TEST

static Suite *heap_suite(void)
{
    Suite *s = suite_create("heap");
    TCase *tc = tcase_create("heap");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, random_keys_pop_in_order);
    tcase_add_test(tc, remove_arbitrary_nodes);
    tcase_add_test(tc, equal_keys_are_fifo);
    tcase_add_test(tc, remove_non_member_is_noop);
    tcase_add_test(tc, top_of_empty_is_null);
    tcase_add_test(tc, push_enomem_leaves_heap_unchanged);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(heap_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
