/*
 * Suite "task": spawn, join, cancel, sleep, yield, run, deadlines, stack
 * sizes, fairness, and plain threads without tasks.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"

/* Each test runs in its own forked child: these start at zero every time. */
static char order[256];
static int order_len;
static int counter;

static void note(char c)
{
    if (order_len < (int)sizeof order - 1) {
        order[order_len++] = c;
    }
}

static void count_task(void *arg)
{
    (void)arg;
    counter++;
}

static void note_task(void *arg)
{
    note(*(const char *)arg);
}

/* ---- spawn and run ------------------------------------------------------ */

START_TEST(spawn_runs_on_yield)
{
    int id = usock_spawn(count_task, NULL);

    ck_assert_int_gt(id, 0);
    ck_assert_int_eq(counter, 0);
    ck_assert_ok(usock_yield());
    ck_assert_int_eq(counter, 1);
}
END_TEST

START_TEST(spawn_runs_on_sleep)
{
    ck_assert_int_gt(usock_spawn(count_task, NULL), 0);
    ck_assert_int_eq(counter, 0);
    ck_assert_ok(usock_sleep(0.01));
    ck_assert_int_eq(counter, 1);
}
END_TEST

START_TEST(spawn_runs_on_blocking_io)
{
    usock_t *c, *s;
    char b;

    test_pair(&c, &s);
    test_send_after(c, 0.0, "x", 1);
    ck_assert_int_gt(usock_spawn(count_task, NULL), 0);
    ck_assert_int_eq(counter, 0);
    ck_assert_ok(usock_settimeout(s, 5.0));
    ck_assert_count(usock_recv(s, &b, 1), 1);
    ck_assert_int_eq(counter, 1);
}
END_TEST

static void sleep_count_task(void *arg)
{
    usock_sleep(*(const double *)arg);
    counter++;
}

static void spawner_task(void *arg)
{
    static const double d = 0.05;

    (void)arg;
    ck_assert_int_gt(usock_spawn(sleep_count_task, (void *)&d), 0);
    counter++;
}

START_TEST(run_waits_for_all)
{
    static const double d1 = 0.05, d2 = 0.1;
    double t0 = usock_now();

    ck_assert_int_gt(usock_spawn(sleep_count_task, (void *)&d2), 0);
    ck_assert_int_gt(usock_spawn(sleep_count_task, (void *)&d1), 0);
    ck_assert_int_gt(usock_spawn(spawner_task, NULL), 0);
    ck_assert_int_gt(usock_spawn(count_task, NULL), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, 5);
    ck_assert_duration(t0, 0.1, 0.6);
}
END_TEST

START_TEST(run_with_no_tasks)
{
    double t0 = usock_now();

    ck_assert_ok(usock_run());
    ck_assert_duration(t0, 0.0, 0.1);
}
END_TEST

static void run_inside_task(void *arg)
{
    int *res = arg;

    errno = 0;
    res[0] = usock_run();
    res[1] = errno;
}

START_TEST(run_from_task_edeadlk)
{
    int res[2] = {0, 0};

    ck_assert_int_gt(usock_spawn(run_inside_task, res), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(res[0], -1);
    ck_assert_str_eq(test_errname(res[1]), "EDEADLK");
}
END_TEST

static void yield_task(void *arg)
{
    for (int i = 0; i < 3; i++) {
        note(*(const char *)arg);
        ck_assert_ok(usock_yield());
    }
}

START_TEST(yield_interleaves)
{
    ck_assert_int_gt(usock_spawn(yield_task, "A"), 0);
    ck_assert_int_gt(usock_spawn(yield_task, "B"), 0);
    ck_assert_int_gt(usock_spawn(yield_task, "C"), 0);
    ck_assert_ok(usock_run());
    ck_assert_str_eq(order, "ABCABCABC");
}
END_TEST

START_TEST(spawn_order_fifo)
{
    ck_assert_int_gt(usock_spawn(note_task, "1"), 0);
    ck_assert_int_gt(usock_spawn(note_task, "2"), 0);
    ck_assert_int_gt(usock_spawn(note_task, "3"), 0);
    ck_assert_ok(usock_run());
    ck_assert_str_eq(order, "123");
}
END_TEST

START_TEST(spawn_null_einval)
{
    ck_assert_errno(usock_spawn(NULL, NULL), EINVAL);
}
END_TEST

/* ---- sleep -------------------------------------------------------------- */

START_TEST(sleep_duration)
{
    double t0 = usock_now();

    ck_assert_ok(usock_sleep(0.05));
    ck_assert_duration(t0, 0.05, 0.55);
    t0 = usock_now();
    ck_assert_ok(usock_sleep(0.2));
    ck_assert_duration(t0, 0.2, 0.7);
    t0 = usock_now();
    ck_assert_ok(usock_sleep(0));
    ck_assert_duration(t0, 0.0, 0.05);
}
END_TEST

START_TEST(sleep_submillisecond)
{
    for (int i = 0; i < 20; i++) {
        double t0 = usock_now();

        ck_assert_ok(usock_sleep(0.0009));
        ck_assert_duration(t0, 0.0009, 0.2);
    }
}
END_TEST

static int spin_stop;

static void spin_task(void *arg)
{
    (void)arg;
    while (!spin_stop && usock_yield() == 0) {
    }
}

/* T01/T02: never early, even while the hub's loop turns constantly. */
START_TEST(sleep_never_early_under_load)
{
    static const double ts[] = {0.0005, 0.0009, 0.002, 0.01};
    int id = usock_spawn(spin_task, NULL);

    ck_assert_int_gt(id, 0);
    for (int i = 0; i < 40; i++) {
        double t = ts[i % 4], t0 = usock_now();

        ck_assert_ok(usock_sleep(t));
        ck_assert_duration(t0, t, t + 0.3);
    }
    spin_stop = 1;
    ck_assert_ok(usock_join(id, 1.0));
}
END_TEST

START_TEST(sleep_bad_args)
{
    ck_assert_errno(usock_sleep(-1.0), EINVAL);
    ck_assert_errno(usock_sleep(-0.001), EINVAL);
    ck_assert_errno(usock_sleep(NAN), EINVAL);
}
END_TEST

START_TEST(now_monotonic)
{
    double a = usock_now(), b;

    ck_assert(a > 0);
    ck_assert_ok(usock_sleep(0.01));
    b = usock_now();
    ck_assert(b >= a + 0.01 - 1e-6);
}
END_TEST

struct sleeper {
    double d;
    char tag;
};

static void ordered_sleep_task(void *arg)
{
    struct sleeper *sl = arg;

    ck_assert_ok(usock_sleep(sl->d));
    note(sl->tag);
}

/* C05: timers fire in deadline order, FIFO among equal durations, once. */
START_TEST(sleep_order)
{
    static struct sleeper sl[] = {
        {0.09, 'c'}, {0.03, 'a'}, {0.06, 'b'}, {0.12, 'd'},
        {0.15, 'e'}, {0.15, 'f'}, {0.15, 'g'},
    };

    for (size_t i = 0; i < sizeof sl / sizeof sl[0]; i++) {
        ck_assert_int_gt(usock_spawn(ordered_sleep_task, &sl[i]), 0);
    }
    ck_assert_ok(usock_run());
    ck_assert_str_eq(order, "abcdefg");
}
END_TEST

/* ---- join --------------------------------------------------------------- */

START_TEST(join_running)
{
    static const double d = 0.1;
    double t0 = usock_now();
    int id = usock_spawn(sleep_count_task, (void *)&d);

    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_join(id, USOCK_NONE));
    ck_assert_int_eq(counter, 1);
    ck_assert_duration(t0, 0.1, 0.6);
}
END_TEST

START_TEST(join_finished)
{
    int id = usock_spawn(count_task, NULL);
    double t0;

    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, 1);
    t0 = usock_now();
    ck_assert_ok(usock_join(id, 0));
    ck_assert_ok(usock_join(id, USOCK_NONE));
    ck_assert_ok(usock_join(id, 1.0));
    ck_assert_duration(t0, 0.0, 0.05);
}
END_TEST

static void join_self_task(void *arg)
{
    int *res = arg;

    errno = 0;
    res[0] = usock_join(usock_self(), 1.0);
    res[1] = errno;
}

START_TEST(join_self)
{
    int res[2] = {0, 0};
    double t0 = usock_now();

    ck_assert_errno(usock_join(usock_self(), USOCK_NONE), EDEADLK);
    ck_assert_int_gt(usock_spawn(join_self_task, res), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(res[0], -1);
    ck_assert_str_eq(test_errname(res[1]), "EDEADLK");
    ck_assert_duration(t0, 0.0, 0.5);
}
END_TEST

START_TEST(join_unknown)
{
    int id = usock_spawn(count_task, NULL);

    ck_assert_int_gt(id, 0);
    ck_assert_errno(usock_join(id + 1000000, 0.1), ESRCH);
    ck_assert_errno(usock_join(INT32_MAX, USOCK_NONE), ESRCH);
    ck_assert_ok(usock_run());
}
END_TEST

START_TEST(join_timeout)
{
    static const double d = 5.0;
    int id = usock_spawn(sleep_count_task, (void *)&d);
    double t0 = usock_now();

    ck_assert_int_gt(id, 0);
    ck_assert_errno(usock_join(id, 0.05), ETIMEDOUT);
    ck_assert_duration(t0, 0.05, 0.55);
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 2.0));
    ck_assert_int_eq(counter, 1);
}
END_TEST

/* ---- cancel ------------------------------------------------------------- */

struct cancel_log {
    int rc[4];
    int err[4];
    int finished;
};

static void cancel_victim(void *arg)
{
    struct cancel_log *cl = arg;

    errno = 0;
    cl->rc[0] = usock_sleep(10.0);
    cl->err[0] = errno;
    errno = 0;
    cl->rc[1] = usock_sleep(0.01);
    cl->err[1] = errno;
    errno = 0;
    cl->rc[2] = usock_yield();
    cl->err[2] = errno;
    errno = 0;
    cl->rc[3] = usock_sleep(0);
    cl->err[3] = errno;
    cl->finished = 1;
}

static void assert_all_cancelled(const struct cancel_log *cl)
{
    ck_assert_int_eq(cl->finished, 1);
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(cl->rc[i] == -1 && cl->err[i] == ECANCELED,
                      "call %d: rc %d errno %s", i, cl->rc[i],
                      test_errname(cl->err[i]));
    }
}

START_TEST(cancel_sleeping)
{
    struct cancel_log cl = {{0}, {0}, 0};
    int id = usock_spawn(cancel_victim, &cl);
    double t0 = usock_now();

    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_sleep(0.02));
    ck_assert_int_eq(cl.finished, 0);
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 2.0));
    assert_all_cancelled(&cl);
    ck_assert_duration(t0, 0.02, 1.0);
    /* Cancelling it again, now that it has finished, is fine. */
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_cancel(id));
}
END_TEST

START_TEST(cancel_before_start)
{
    struct cancel_log cl = {{0}, {0}, 0};
    int id = usock_spawn(cancel_victim, &cl);

    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 2.0));
    assert_all_cancelled(&cl);
}
END_TEST

static void cancel_self_task(void *arg)
{
    struct cancel_log *cl = arg;

    ck_assert_ok(usock_cancel(usock_self()));
    cancel_victim(cl);
}

START_TEST(cancel_self)
{
    struct cancel_log cl = {{0}, {0}, 0};
    int id = usock_spawn(cancel_self_task, &cl);

    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_join(id, 2.0));
    assert_all_cancelled(&cl);
}
END_TEST

START_TEST(cancel_finished)
{
    int id = usock_spawn(count_task, NULL);

    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_run());
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 0));
}
END_TEST

START_TEST(cancel_unknown)
{
    int id = usock_spawn(count_task, NULL);

    ck_assert_int_gt(id, 0);
    ck_assert_errno(usock_cancel(id + 1000000), ESRCH);
    ck_assert_errno(usock_cancel(INT32_MAX), ESRCH);
    ck_assert_ok(usock_run());
}
END_TEST

struct joiner {
    int target, rc, err;
};

static void joiner_task(void *arg)
{
    struct joiner *j = arg;

    errno = 0;
    j->rc = usock_join(j->target, USOCK_NONE);
    j->err = errno;
}

START_TEST(cancel_joiner)
{
    static const double d = 5.0;
    struct joiner j = {0, 0, 0};
    int jid;

    j.target = usock_spawn(sleep_count_task, (void *)&d);
    ck_assert_int_gt(j.target, 0);
    jid = usock_spawn(joiner_task, &j);
    ck_assert_int_gt(jid, 0);
    ck_assert_ok(usock_sleep(0.02));
    ck_assert_ok(usock_cancel(jid));
    ck_assert_ok(usock_join(jid, 2.0));
    ck_assert_int_eq(j.rc, -1);
    ck_assert_str_eq(test_errname(j.err), "ECANCELED");
    /* The joined task is unaffected: still sleeping. */
    ck_assert_int_eq(counter, 0);
    ck_assert_ok(usock_cancel(j.target));
    ck_assert_ok(usock_join(j.target, 2.0));
}
END_TEST

/* C05: a cancelled sleeper's timer never fires later. */
START_TEST(cancel_no_stale_wakeup)
{
    static const double d = 0.05;
    int id = usock_spawn(sleep_count_task, (void *)&d);
    int other;

    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_yield());
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 2.0));
    ck_assert_int_eq(counter, 1);
    /* Another sleeper across the old deadline wakes exactly once, on time. */
    other = usock_spawn(sleep_count_task, (void *)&d);
    ck_assert_int_gt(other, 0);
    double t0 = usock_now();
    ck_assert_ok(usock_join(other, 2.0));
    ck_assert_duration(t0, 0.05, 0.55);
    ck_assert_int_eq(counter, 2);
}
END_TEST

static void cancel_main_task(void *arg)
{
    usock_sleep(0.05);
    usock_cancel(*(int *)arg);
}

/* usock_run returns ECANCELED when its caller is cancelled. */
START_TEST(run_cancelled)
{
    static const double d = 1.0;
    int me = usock_self();
    double t0 = usock_now();
    int id;

    ck_assert_int_gt(usock_spawn(cancel_main_task, &me), 0);
    id = usock_spawn(sleep_count_task, (void *)&d);
    ck_assert_int_gt(id, 0);
    ck_assert_errno(usock_run(), ECANCELED);
    ck_assert_duration(t0, 0.05, 0.55);
    ck_assert_int_eq(counter, 0);
    ck_assert_errno(usock_sleep(0.01), ECANCELED);
    ck_assert_errno(usock_join(id, 2.0), ECANCELED);
    /* The thread's own context is cancelled: it cannot run the sleeper
     * to its end. */
    test_allow_tasks(1);
}
END_TEST

/* ---- deadlines ---------------------------------------------------------- */

START_TEST(deadline_bounds_sleep)
{
    double t0 = usock_now(), d = t0 + 0.1;

    ck_assert_double_eq_tol(usock_setdeadline(d), USOCK_NONE, 1e-6);
    ck_assert_errno(usock_sleep(5.0), ETIMEDOUT);
    ck_assert_duration(t0, 0.1, 0.6);
    /* A sleep that ends before the deadline is unaffected. */
    ck_assert_double_eq_tol(usock_setdeadline(usock_now() + 1.0), d, 1e-6);
    t0 = usock_now();
    ck_assert_ok(usock_sleep(0.02));
    ck_assert_duration(t0, 0.02, 0.5);
    usock_setdeadline(USOCK_NONE);
    ck_assert_ok(usock_sleep(0.01));
}
END_TEST

START_TEST(deadline_nesting)
{
    double t0 = usock_now(), outer = t0 + 0.3, inner = t0 + 0.1;

    ck_assert_double_eq_tol(usock_setdeadline(outer), USOCK_NONE, 1e-6);
    ck_assert_double_eq_tol(usock_setdeadline(inner), outer, 1e-6);
    ck_assert_errno(usock_sleep(5.0), ETIMEDOUT);
    ck_assert_duration(t0, 0.1, 0.6);
    ck_assert_double_eq_tol(usock_setdeadline(outer), inner, 1e-6);
    ck_assert_errno(usock_sleep(5.0), ETIMEDOUT);
    ck_assert_duration(t0, 0.3, 0.8);
    ck_assert_double_eq_tol(usock_setdeadline(USOCK_NONE), outer, 1e-6);
    ck_assert_double_eq_tol(usock_setdeadline(USOCK_NONE), USOCK_NONE, 1e-6);
}
END_TEST

START_TEST(deadline_past)
{
    double t0 = usock_now();

    usock_setdeadline(t0 - 1.0);
    ck_assert_errno(usock_sleep(1.0), ETIMEDOUT);
    ck_assert_duration(t0, 0.0, 0.05);
}
END_TEST

START_TEST(deadline_bounds_join)
{
    static const double d = 5.0;
    int id = usock_spawn(sleep_count_task, (void *)&d);
    double t0 = usock_now();

    ck_assert_int_gt(id, 0);
    usock_setdeadline(t0 + 0.1);
    ck_assert_errno(usock_join(id, USOCK_NONE), ETIMEDOUT);
    ck_assert_duration(t0, 0.1, 0.6);
    /* The earlier of the join's timeout and the deadline wins. */
    usock_setdeadline(usock_now() + 2.0);
    t0 = usock_now();
    ck_assert_errno(usock_join(id, 0.05), ETIMEDOUT);
    ck_assert_duration(t0, 0.05, 0.55);
    usock_setdeadline(USOCK_NONE);
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 2.0));
}
END_TEST

static void deadline_free_task(void *arg)
{
    int *res = arg;

    /* The spawner's deadline is not ours. */
    res[0] = usock_setdeadline(USOCK_NONE) == USOCK_NONE;
    errno = 0;
    res[1] = usock_sleep(0.2);
    res[2] = errno;
}

START_TEST(deadline_is_per_task)
{
    int res[3] = {0, -2, 0};
    double t0 = usock_now();
    int id;

    usock_setdeadline(t0 + 0.05);
    id = usock_spawn(deadline_free_task, res);
    ck_assert_int_gt(id, 0);
    ck_assert_errno(usock_sleep(5.0), ETIMEDOUT);
    usock_setdeadline(USOCK_NONE);
    ck_assert_ok(usock_join(id, 2.0));
    ck_assert_int_eq(res[0], 1);
    ck_assert_msg(res[1] == 0, "task sleep: %d %s", res[1],
                  test_errname(res[2]));
    ck_assert_duration(t0, 0.2, 0.7);
}
END_TEST

/* ---- identity, scale, stacks -------------------------------------------- */

static void self_task(void *arg)
{
    *(int *)arg = usock_self();
}

START_TEST(self_differs)
{
    int a = 0, b = 0, ia, ib, me = usock_self();

    ck_assert_int_gt(me, 0);
    ia = usock_spawn(self_task, &a);
    ib = usock_spawn(self_task, &b);
    ck_assert_int_gt(ia, 0);
    ck_assert_int_gt(ib, 0);
    ck_assert_int_ne(ia, ib);
    ck_assert_int_ne(ia, me);
    ck_assert_int_ne(ib, me);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(a, ia);
    ck_assert_int_eq(b, ib);
    ck_assert_int_eq(usock_self(), me);
}
END_TEST

static void yield_count_task(void *arg)
{
    (void)arg;
    ck_assert_ok(usock_yield());
    counter++;
}

START_TEST(many_tasks)
{
    /* ThreadSanitizer maps a trace of about 1 MiB per task (a fiber to
     * it): 500 under make check-tsan. */
    const int N = getenv("USOCK_TEST_TSAN") ? 500 : 10000;
    int last = 0;

    for (int i = 0; i < N; i++) {
        int id = usock_spawn(yield_count_task, NULL);

        ck_assert_int_gt(id, 0);
        ck_assert_int_ne(id, last);
        last = id;
    }
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, N);
    /* The stacks were recycled or freed: another round works as well. */
    for (int i = 0; i < N; i++) {
        ck_assert_int_gt(usock_spawn(count_task, NULL), 0);
    }
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, 2 * N);
}
END_TEST

static unsigned touch_stack(size_t n)
{
    volatile unsigned char buf[n];
    unsigned sum = 0;

    for (size_t i = 0; i < n; i++) {
        buf[i] = (unsigned char)i;
    }
    for (size_t i = 0; i < n; i++) {
        sum += buf[i];
    }
    return sum;
}

static unsigned expected_sum(size_t n)
{
    unsigned sum = 0;

    for (size_t i = 0; i < n; i++) {
        sum += (unsigned char)i;
    }
    return sum;
}

static void deep_task(void *arg)
{
    size_t n = *(size_t *)arg;

    ck_assert_uint_eq(touch_stack(n), expected_sum(n));
    ck_assert_ok(usock_yield());
    ck_assert_uint_eq(touch_stack(n), expected_sum(n));
    counter++;
}

START_TEST(deep_stack)
{
    size_t n = 32 * 1024;

    ck_assert_int_gt(usock_spawn(deep_task, &n), 0);
    ck_assert_int_gt(usock_spawn(deep_task, &n), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, 2);
}
END_TEST

START_TEST(stacksize)
{
    size_t big = 256 * 1024, small = 4 * 1024;

    ck_assert_errno(usock_setstacksize(0), EINVAL);
    ck_assert_errno(usock_setstacksize(1024), EINVAL);
    ck_assert_errno(usock_setstacksize(16 * 1024 - 1), EINVAL);
    ck_assert_errno(usock_setstacksize((size_t)2 << 30), EINVAL);
    ck_assert_ok(usock_setstacksize(16 * 1024));
    ck_assert_int_gt(usock_spawn(deep_task, &small), 0);
    ck_assert_ok(usock_run());
    ck_assert_ok(usock_setstacksize(512 * 1024));
    ck_assert_int_gt(usock_spawn(deep_task, &big), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, 2);
    ck_assert_ok(usock_setstacksize(64 * 1024));
}
END_TEST

/* ---- fairness (C08) ----------------------------------------------------- */

static int stop;

static void busy_yield_task(void *arg)
{
    long *spins = arg;

    while (!stop) {
        ck_assert_ok(usock_yield());
        (*spins)++;
    }
}

static void busy_sleep0_task(void *arg)
{
    long *spins = arg;

    while (!stop) {
        ck_assert_ok(usock_sleep(0));
        (*spins)++;
    }
}

static void idle_sleeper(void *arg)
{
    (void)arg;
    ck_assert_ok(usock_sleep(0.05));
    counter++;
}

static void idle_reader(void *arg)
{
    usock_t *s = arg;
    char buf[4];

    ck_assert_count(usock_recv(s, buf, sizeof buf), 4);
    ck_assert_int_eq(memcmp(buf, "ping", 4), 0);
    counter++;
    stop = 1;
}

static void starvation(void (*busy)(void *))
{
    long spins = 0;
    double t0 = usock_now();
    usock_t *c, *s;

    test_pair(&c, &s);
    ck_assert_int_gt(usock_spawn(busy, &spins), 0);
    ck_assert_int_gt(usock_spawn(idle_sleeper, NULL), 0);
    ck_assert_int_gt(usock_spawn(idle_reader, s), 0);
    test_send_after(c, 0.1, "ping", 4);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, 2);
    ck_assert_int_gt(spins, 0);
    ck_assert_duration(t0, 0.1, 1.0);
}

START_TEST(starvation_yield)
{
    starvation(busy_yield_task);
}
END_TEST

START_TEST(starvation_sleep0)
{
    starvation(busy_sleep0_task);
}
END_TEST

/* ---- plain threads ------------------------------------------------------ */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

struct thread_io {
    usock_t *c, *s;
    volatile int ready;
    int rc[2], err[2];
    double took;
    char buf[8];
};

static void *plain_thread(void *arg)
{
    struct thread_io *t = arg;
    double t0;

    test_pair(&t->c, &t->s);
    usock_settimeout(t->s, 0.1);
    t0 = usock_now();
    errno = 0;
    t->rc[0] = usock_recv(t->s, t->buf, sizeof t->buf);
    t->err[0] = errno;
    t->took = usock_now() - t0;
    usock_settimeout(t->s, 5.0);
    __atomic_store_n(&t->ready, 1, __ATOMIC_SEQ_CST);
    errno = 0;
    t->rc[1] = usock_recv(t->s, t->buf, sizeof t->buf);
    t->err[1] = errno;
    return NULL;
}

static void wait_ready(volatile int *flag)
{
    struct timespec ts = {0, 1000000};

    for (int i = 0; i < 5000 && !__atomic_load_n(flag, __ATOMIC_SEQ_CST);
         i++) {
        nanosleep(&ts, NULL);
    }
    ck_assert_int_eq(*flag, 1);
}

START_TEST(plain_thread_blocking)
{
    struct thread_io t;
    struct timespec ts = {0, 50000000};
    pthread_t th;
    int before, during;

    memset(&t, 0, sizeof t);
    before = count_fds();
    ck_assert_int_eq(pthread_create(&th, NULL, plain_thread, &t), 0);
    wait_ready(&t.ready);
    nanosleep(&ts, NULL);
    /* The thread waits on its socket with no reactor fd of its own. */
    during = count_fds();
    ck_assert_int_eq(during, before + 2);
    ck_assert_count(usock_send(t.c, "hello", 5), 5);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(t.rc[0], -1);
    ck_assert_str_eq(test_errname(t.err[0]), "ETIMEDOUT");
    ck_assert_msg(t.took >= 0.1 - 1e-6 && t.took < 0.6 * test_mult(),
                  "timeout took %f", t.took);
    ck_assert_int_eq(t.rc[1], 5);
    ck_assert_int_eq(memcmp(t.buf, "hello", 5), 0);
}
END_TEST

static __thread int thread_count;

static void thread_local_task(void *arg)
{
    (void)arg;
    usock_sleep(0.02);
    thread_count++;
}

static void *thread_with_tasks(void *arg)
{
    int *res = arg;

    for (int i = 0; i < 10; i++) {
        if (usock_spawn(thread_local_task, NULL) <= 0) {
            return NULL;
        }
    }
    res[0] = usock_run();
    res[1] = thread_count;
    return NULL;
}

/* Each thread has its own hub: its tasks run on it, never on another. */
START_TEST(threads_own_hubs)
{
    int res[2][2] = {{-2, -2}, {-2, -2}};
    int before = count_fds();
    pthread_t th[2];

    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(
            pthread_create(&th[i], NULL, thread_with_tasks, res[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(res[i][0], 0);
        ck_assert_int_eq(res[i][1], 10);
    }
    ck_assert_int_eq(thread_count, 0);
    /* A thread's hub (and its reactor's fds) went with the thread. */
    ck_assert_int_eq(count_fds(), before);
    ck_assert_ok(usock_run());
}
END_TEST

/* ---- registration ------------------------------------------------------- */

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, spawn_runs_on_yield);
    tcase_add_test(tc, spawn_runs_on_sleep);
    tcase_add_test(tc, spawn_runs_on_blocking_io);
    tcase_add_test(tc, run_waits_for_all);
    tcase_add_test(tc, run_with_no_tasks);
    tcase_add_test(tc, run_from_task_edeadlk);
    tcase_add_test(tc, yield_interleaves);
    tcase_add_test(tc, spawn_order_fifo);
    tcase_add_test(tc, spawn_null_einval);
    tcase_add_test(tc, sleep_duration);
    tcase_add_test(tc, sleep_submillisecond);
    tcase_add_test(tc, sleep_never_early_under_load);
    tcase_add_test(tc, sleep_bad_args);
    tcase_add_test(tc, now_monotonic);
    tcase_add_test(tc, sleep_order);
    tcase_add_test(tc, join_running);
    tcase_add_test(tc, join_finished);
    tcase_add_test(tc, join_self);
    tcase_add_test(tc, join_unknown);
    tcase_add_test(tc, join_timeout);
    tcase_add_test(tc, cancel_sleeping);
    tcase_add_test(tc, cancel_before_start);
    tcase_add_test(tc, cancel_self);
    tcase_add_test(tc, cancel_finished);
    tcase_add_test(tc, cancel_unknown);
    tcase_add_test(tc, cancel_joiner);
    tcase_add_test(tc, cancel_no_stale_wakeup);
    tcase_add_test(tc, run_cancelled);
    tcase_add_test(tc, deadline_bounds_sleep);
    tcase_add_test(tc, deadline_nesting);
    tcase_add_test(tc, deadline_past);
    tcase_add_test(tc, deadline_bounds_join);
    tcase_add_test(tc, deadline_is_per_task);
    tcase_add_test(tc, self_differs);
    tcase_add_test(tc, many_tasks);
    tcase_add_test(tc, deep_stack);
    tcase_add_test(tc, stacksize);
    tcase_add_test(tc, starvation_yield);
    tcase_add_test(tc, starvation_sleep0);
    tcase_add_test(tc, plain_thread_blocking);
    tcase_add_test(tc, threads_own_hubs);
}

/* ---- F16: a task overflowing its stack; spawning past memory ------------ */

/* Recursion with no end: each frame keeps 1 KiB live, so the compiler can
 * neither drop the frames nor turn the call into a loop. */
static volatile int bottom; /* never set: the recursion's only way out */

static unsigned bottomless(volatile unsigned char *prev)
{
    volatile unsigned char frame[1024];

    if (bottom) {
        return 0;
    }
    frame[0] = (unsigned char)(prev ? prev[0] + 1 : 1);
    frame[sizeof frame - 1] = frame[0];
    return bottomless(frame) + frame[sizeof frame - 1];
}

static void overflow_task(void *arg)
{
    (void)arg;
    counter = (int)bottomless(NULL);
}

/* F16: a spawned task that recurses without end dies on its guard page
 * with SIGSEGV (usocket installs no handler: usocket(7) "Stack
 * overflow"), never corrupting a neighbour and carrying on. */
START_TEST(task_overflow_sigsegv)
{
    /* Sanitizers catch SIGSEGV and exit(1); the test wants the signal. */
    signal(SIGSEGV, SIG_DFL);
    ck_assert_int_gt(usock_spawn(overflow_task, NULL), 0);
    usock_run();
    ck_abort_msg("a task recursed without end and returned");
}
END_TEST

static void parked_task(void *arg)
{
    (void)arg;
    if (usock_sleep(60.0) != 0 && errno == ECANCELED) {
        counter++;
    }
}

/* F16: spawn until the address space is exhausted: the spawn that cannot
 * get a stack fails with ENOMEM (not a crash, not EAGAIN, which is the
 * task cap's), and the tasks spawned before it still run and end. */
START_TEST(spawn_until_enomem)
{
    static int ids[100000];
    struct rlimit old, lim;
    long vm_kb = 0;
    char line[256];
    int n = 0, err = 0, id0;
    FILE *f;

    id0 = usock_spawn(parked_task, NULL); /* the hub and its reactor */
    ck_assert_int_gt(id0, 0);
    ck_assert_ok(usock_yield());
    counter = 0;
    f = fopen("/proc/self/status", "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmSize: %ld kB", &vm_kb);
    }
    fclose(f);
    ck_assert_int_gt(vm_kb, 0);
    ck_assert_ok(getrlimit(RLIMIT_AS, &old));
    lim = old;
    lim.rlim_cur = (rlim_t)vm_kb * 1024 + 16 * 1024 * 1024;
    ck_assert_ok(setrlimit(RLIMIT_AS, &lim));
    while (n < 100000) {
        int id = usock_spawn(parked_task, NULL);
        if (id <= 0) {
            err = errno;
            break;
        }
        ids[n++] = id;
    }
    ck_assert_ok(setrlimit(RLIMIT_AS, &old));
    printf("F16: %d tasks spawned within 16 MiB of address space, then "
           "spawn failed with %s\n",
           n, test_errname(err));
    ck_assert_int_lt(n, 100000);
    ck_assert_int_gt(n, 10);
    ck_assert_int_eq(err, ENOMEM);
    for (int i = 0; i < n; i++) {
        ck_assert_ok(usock_cancel(ids[i]));
    }
    ck_assert_ok(usock_cancel(id0));
    ck_assert_ok(usock_run());
    ck_assert_int_eq(counter, n + 1);
}
END_TEST

static Suite *task_suite(void)
{
    Suite *s = suite_create("task");
    const char *ck_fork = getenv("CK_FORK");

    add_reactor_tcases(s, "task", add_tests, 30);
    /* Dying on a signal, and a lowered RLIMIT_AS, need a forked child per
     * test; RLIMIT_AS also breaks sanitizers (their shadow reservations)
     * and valgrind, which then skip it with the reason. */
    if (ck_fork == NULL || strcmp(ck_fork, "no") != 0) {
        TCase *tc = tcase_create("task:limits");

        tcase_set_timeout(tc, 30);
        tcase_add_test_raise_signal(tc, task_overflow_sigsegv, SIGSEGV);
        if (test_sanitized()) {
            test_skip("task:spawn_until_enomem",
                      "RLIMIT_AS cannot be lowered under a sanitizer or "
                      "valgrind (their own reservations)");
        } else {
            tcase_add_test(tc, spawn_until_enomem);
        }
        suite_add_tcase(s, tc);
    } else {
        test_skip("task:limits", "needs a forked child per test (CK_FORK=no)");
    }
    return s;
}

int main(void)
{
    return test_main(task_suite());
}
