/*
 * Suite "fault": the library's error paths under faults injected for real
 * (RELIABILITY.md F15 and DESIGN "Lifetimes across threads"): allocation
 * failure through the hidden hook usock__alloc_fail_in, a reactor that
 * cannot wait, poll(2) errors, exhausted pthread keys.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"
#include "internal.h"

static int on_ev(void)
{
    const char *r = getenv("USOCKET_REACTOR");
    return r == NULL || strcmp(r, "ev") == 0;
}

/* ---- a failed watch fails the call (F15) -------------------------------- */

struct watcher {
    usock_t *s;
    int armed, consumed, done;
    ssize_t rc;
    int err;
};

/* Arm the hook, then wait: the allocation that fails, if any, is the
 * reactor's record of this socket's fd. */
static void watch_task(void *arg)
{
    struct watcher *w = arg;
    char c;

    usock__alloc_fail_in(1);
    w->armed = 1;
    errno = 0;
    w->rc = usock_recv(w->s, &c, 1);
    w->err = errno;
    w->done = 1;
}

START_TEST(watch_enomem)
{
    enum { MAX = 300 };
    static usock_t *a[MAX], *b[MAX];
    static struct watcher w[MAX];
    int n, hit = -1;

    /* The pairs first, with no reactor yet (plain waits): then only the
     * tasks below watch fds, and one of them finds the reactor's tables
     * full (poll) or a new fd number (ev). */
    ck_assert_ok(raise_nofile(2 * MAX + 64));
    for (int i = 0; i < MAX; i++) {
        ck_assert_ok(test_pair(&a[i], &b[i]));
    }
    ck_assert_ptr_nonnull(usock_hub_self()); /* the reactor exists */
    ck_assert_ok(usock_sleep(0.001)); /* and the timer heap */
    for (n = 0; n < MAX && hit < 0; n++) {
        /* b: the accepted end, never waited on (a's connect may have). */
        w[n] = (struct watcher){.s = b[n]};
        ck_assert_int_gt(usock_spawn(watch_task, &w[n]), 0);
        ck_assert_ok(usock_sleep(0.002));
        ck_assert(w[n].armed);
        if (usock__alloc_fail_left() == 0) {
            hit = n; /* the watch of this fd failed */
        } else {
            usock__alloc_fail_in(0); /* watched without allocating */
            ck_assert(!w[n].done);
        }
    }
    ck_assert_msg(hit >= 0, "no watch allocated in %d sockets", MAX);
    for (int i = 0; i < 100 && !w[hit].done; i++) {
        usock_sleep(0.01);
    }
    ck_assert_msg(w[hit].done, "the task whose watch failed never woke");
    ck_assert_int_eq(w[hit].rc, -1);
    ck_assert_str_eq(test_errname(w[hit].err), "ENOMEM");
    /* The hub still works: the next recv on that socket gets its data. */
    ck_assert_count(usock_send(a[hit], "x", 1), 1);
    struct test_op op = {.kind = TEST_RECV, .s = b[hit], .n = 1};
    test_spawn_op(&op);
    test_wait_op(&op, 2.0);
    ck_assert_int_eq(op.rc, 1);
    for (int i = 0; i < MAX; i++) {
        ck_assert_ok(usock_close(a[i]));
        ck_assert_ok(usock_close(b[i]));
    }
    ck_assert_ok(usock_run());
}
END_TEST

/* ---- usock_sleep without a timer: ENOMEM, not errno 0 ------------------- */

struct sleeper {
    int rc, err;
};

static void sleep_task(void *arg)
{
    struct sleeper *sl = arg;

    usock__alloc_fail_in(1); /* the timer heap's first allocation */
    errno = 0;
    sl->rc = usock_sleep(0.01);
    sl->err = errno;
}

START_TEST(sleep_enomem)
{
    struct sleeper sl = {0};

    ck_assert_int_gt(usock_spawn(sleep_task, &sl), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(usock__alloc_fail_left(), 0);
    ck_assert_int_eq(sl.rc, -1);
    ck_assert_str_eq(test_errname(sl.err), "ENOMEM");
}
END_TEST

/* ---- a reactor that cannot wait: blocked calls fail, no spin ------------ */

/* Make the next reactor pass fail with EINVAL: for ev, put /dev/null over
 * the epoll fd (epoll_wait: EINVAL); for poll, a RLIMIT_NOFILE below the
 * number of fds watched (poll(2): EINVAL). */
static void break_reactor(void)
{
    if (on_ev()) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *e;
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC), found = 0;

        ck_assert_int_ge(nul, 0);
        ck_assert_ptr_nonnull(d);
        while ((e = readdir(d)) != NULL) {
            char path[300], target[64];
            ssize_t k;
            snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
            k = readlink(path, target, sizeof target - 1);
            if (k > 0) {
                target[k] = '\0';
                if (strcmp(target, "anon_inode:[eventpoll]") == 0) {
                    ck_assert_int_ge(dup3(nul, atoi(e->d_name), O_CLOEXEC),
                                     0);
                    found++;
                }
            }
        }
        closedir(d);
        close(nul);
        ck_assert_int_eq(found, 1);
    } else {
        struct rlimit rl;
        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        rl.rlim_cur = 1;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
}

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

START_TEST(reactor_failure)
{
    usock_t *a, *b;
    struct test_op op = {.kind = TEST_RECV, .n = 1};

    ck_assert_ok(test_pair(&a, &b));
    op.s = a;
    test_spawn_op(&op);
    ck_assert_ok(usock_sleep(0.01)); /* the recv is blocked */
    ck_assert(!op.done);
    break_reactor();
    double t0 = usock_now(), c0 = cpu_seconds();
    /* The sleep is a blocked call too: it fails, and so does the recv. */
    ck_assert_errno(usock_sleep(0.3), EINVAL);
    ck_assert(op.done);
    ck_assert_int_eq(op.rc, -1);
    ck_assert_str_eq(test_errname(op.err), "EINVAL");
    double wall = usock_now() - t0, cpu = cpu_seconds() - c0;
    ck_assert_msg(wall < 0.25, "the failure took %.3f s to surface", wall);
    ck_assert_msg(cpu < 0.2, "%.3f s of CPU in %.3f s", cpu, wall);
}
END_TEST

/* ---- usock_poll: a poll(2) error is an error (not "nothing ready") ------ */

START_TEST(poll_error)
{
    usock_t *a, *b;
    struct usock_pollfd fds[20];
    struct rlimit rl;

    ck_assert_ok(test_pair(&a, &b));
    for (size_t i = 0; i < 20; i++) {
        fds[i] = (struct usock_pollfd){.sock = a, .events = POLLIN};
    }
    /* poll(2) refuses more entries than RLIMIT_NOFILE: EINVAL. */
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = 16;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_errno(usock_poll(fds, 20, 0), EINVAL);
    ck_assert_errno(usock_poll(fds, 20, 0.05), EINVAL);
}
END_TEST

/* ---- a post whose spawn fails is kept until it runs --------------------- */

static void set_flag(void *arg)
{
    *(int *)arg = 1;
}

START_TEST(post_spawn_enomem)
{
    usock_hub_t *h = usock_hub_self();
    int ran = 0;

    ck_assert_ptr_nonnull(h);
    ck_assert_ok(usock_sleep(0.001)); /* the timer heap exists */
    ck_assert_ok(usock_hub_post(h, set_flag, &ran));
    /* The next allocation is the hub's first task table, in the spawn. */
    usock__alloc_fail_in(1);
    for (int i = 0; i < 100 && !ran; i++) {
        ck_assert_ok(usock_sleep(0.01));
    }
    ck_assert_int_eq(usock__alloc_fail_left(), 0);
    ck_assert_msg(ran, "the post was dropped when its spawn failed");
    ck_assert_ok(usock_run());
}
END_TEST

/* ---- no pthread key: the hub is refused, not made without clean-up ------ */

static void nothing(void *arg)
{
    (void)arg;
}

START_TEST(no_pthread_key)
{
    pthread_key_t k;
    int n = 0;

    while (pthread_key_create(&k, NULL) == 0 && n < 100000) {
        n++;
    }
    ck_assert_errno(usock_spawn(nothing, NULL), EAGAIN);
    ck_assert_ptr_null(usock_hub_self());
}
END_TEST

/* ---- libev's allocations go through a non-aborting allocator ------------ */

START_TEST(ev_alloc_no_abort)
{
    usock_t *a, *b;
    struct test_op op = {.kind = TEST_RECV, .n = 1};
    int big = 5000;

    ck_assert_ok(raise_nofile((rlim_t)big + 10));
    ck_assert_ok(test_pair(&a, &b));
    ck_assert_ptr_nonnull(usock_hub_self()); /* the reactor exists */
    ck_assert_ok(usock_sleep(0.001)); /* the timer heap, libev's arrays */
    /* Move a to a high fd number: libev grows its fd array when it starts
     * the watcher, in the loop iteration after our own records exist. */
    ck_assert_int_eq(dup3(a->fd, big, O_CLOEXEC), big);
    close(a->fd);
    a->fd = big;
    op.s = a;
    test_spawn_op(&op);
    ck_assert_ok(usock_yield()); /* the recv registers and parks */
    ck_assert(!op.done);
    usock__alloc_fail_in(1);
    ck_assert_ok(usock_sleep(0.05)); /* libev starts the watcher */
    ck_assert_msg(usock__alloc_fail_left() == 0,
                  "libev did not allocate through usocket's allocator");
    ck_assert_count(usock_send(b, "x", 1), 1);
    test_wait_op(&op, 2.0);
    ck_assert_int_eq(op.rc, 1);
}
END_TEST

static void add_fault(TCase *tc)
{
    tcase_add_test(tc, watch_enomem);
    tcase_add_test(tc, sleep_enomem);
    tcase_add_test(tc, reactor_failure);
    tcase_add_test(tc, poll_error);
    tcase_add_test(tc, post_spawn_enomem);
}

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc;

    add_reactor_tcases(s, "fault", add_fault, 30);
    tc = tcase_create("fault:plain");
    tcase_add_test(tc, no_pthread_key);
    suite_add_tcase(s, tc);
#ifdef HAVE_LIBEV
    tc = tcase_create("fault:ev-only");
    tcase_add_test(tc, ev_alloc_no_abort);
    suite_add_tcase(s, tc);
#endif
    return s;
}

int main(void)
{
    return test_main(fault_suite());
}
