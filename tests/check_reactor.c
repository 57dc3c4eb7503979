/*
 * Suite "reactor": the backends of reactor/reactor.h over pipes and
 * socketpairs.  The same tests run on each backend, one tcase per backend
 * ("reactor:ev" when built with libev, "reactor:poll"); a checked fixture
 * picks the backend through its ops pointer and opens a standalone reactor.
 * "reactor:common" covers what the backends share, and the ev tcase also
 * runs the foreign-loop (embedding) tests.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_LIBEV
#include <ev.h>
#endif

#include "reactor.h"

#define MS  1000000LL
#define SEC 1000000000LL

static const struct usock__reactor_ops *ops;
static struct usock__reactor rx;

/* A watcher that records its callbacks. */
struct rec {
    struct usock__io io; /* first member: on_event casts back */
    int calls;
    int last; /* revents of the last callback */
    int seen; /* every revents bit ever reported */
    void (*hook)(struct rec *self);
    struct rec *other;
};

static void on_event(struct usock__io *w, int revents)
{
    struct rec *r = (struct rec *)w;

    r->calls++;
    r->last = revents;
    r->seen |= revents;
    if (r->hook != NULL) {
        r->hook(r);
    }
}

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    r->io.cb = on_event;
}

static int64_t now(void)
{
    return usock__clock_ns();
}

static void open_reactor(const struct usock__reactor_ops *o)
{
    ops = o;
    memset(&rx, 0, sizeof(rx));
    rx.ops = o;
    ck_assert_int_eq(o->init(&rx, NULL), 0);
}

static void setup_poll(void)
{
    open_reactor(&usock__reactor_poll);
}

#ifdef HAVE_LIBEV
static void setup_ev(void)
{
    open_reactor(&usock__reactor_ev);
}
#endif

#ifdef HAVE_EPOLL
static void setup_epoll(void)
{
    open_reactor(&usock__reactor_epoll);
}
#endif

static void teardown(void)
{
    ops->destroy(&rx);
}

static int is_poll(void)
{
    return ops == &usock__reactor_poll;
}

static void make_pipe(int p[2])
{
    ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static void make_pair(int p[2])
{
    ck_assert_int_eq(
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p),
        0);
}

static void put_byte(int fd)
{
    ck_assert_int_eq(write(fd, "x", 1), 1);
}

static void take_byte(int fd)
{
    char c;

    ck_assert_int_eq(read(fd, &c, 1), 1);
}

static void watch(struct rec *r, int fd, int events)
{
    ck_assert_int_eq(ops->io_set(&rx, &r->io, fd, events), 0);
    ck_assert_int_eq(r->io.fd, fd);
    ck_assert_int_eq(r->io.events, events);
}

/* run_once until `rel` ns from now. */
static int run_for(int64_t rel)
{
    return ops->run_once(&rx, now() + rel);
}

/* run_once until r has been called, at most 5 s. */
static void run_until_called(struct rec *r)
{
    int64_t end = now() + 5 * SEC;

    while (r->calls == 0 && now() < end) {
        ck_assert_int_ge(run_for(100 * MS), 0);
    }
    ck_assert_int_gt(r->calls, 0);
}

/* A wait with nothing to report: 0 callbacks, not before the deadline. */
static void expect_quiet(int64_t rel)
{
    int64_t t0 = now(), t1;

    ck_assert_int_eq(ops->run_once(&rx, t0 + rel), 0);
    t1 = now();
    ck_assert_int_ge(t1 - t0, rel);
    ck_assert_int_lt(t1 - t0, rel + 5 * SEC);
}

/* Raise the soft fd limit to the hard one; return the new soft limit. */
static rlim_t raise_nofile(void)
{
    struct rlimit rl;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    return rl.rlim_cur;
}

/* ==========================================================================
 *  Both backends
 * ========================================================================== */

START_TEST(idle_fd_waits_until_deadline)
{
    struct rec r;
    int p[2];

    make_pipe(p);
    rec_init(&r);
    watch(&r, p[0], USOCK__IN);
    expect_quiet(50 * MS);
    ck_assert_int_eq(r.calls, 0);
}
END_TEST

START_TEST(readable_fires_in)
{
    struct rec r;
    int p[2];

    make_pipe(p);
    rec_init(&r);
    watch(&r, p[0], USOCK__IN);
    put_byte(p[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.last, USOCK__IN);
    /* Level-triggered: still readable, reported again. */
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.calls, 2);
    take_byte(p[0]);
    expect_quiet(50 * MS);
    ck_assert_int_eq(r.calls, 2);
}
END_TEST

START_TEST(writable_fires_out)
{
    struct rec r;
    int p[2];

    make_pipe(p);
    rec_init(&r);
    watch(&r, p[1], USOCK__OUT);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.last, USOCK__OUT);
}
END_TEST

START_TEST(mask_changes_apply)
{
    struct rec r;
    int s[2];

    make_pair(s);
    rec_init(&r);
    watch(&r, s[0], USOCK__IN | USOCK__OUT);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__OUT);
    put_byte(s[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__IN | USOCK__OUT);
    watch(&r, s[0], USOCK__IN);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__IN);
    watch(&r, s[0], USOCK__IN); /* the same mask again */
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__IN);
    watch(&r, s[0], USOCK__OUT);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__OUT);
    ck_assert_int_eq(r.calls, 5);
}
END_TEST

START_TEST(mask_zero_stops_callbacks)
{
    struct rec r;
    int s[2];

    make_pair(s);
    put_byte(s[1]);
    rec_init(&r);
    watch(&r, s[0], USOCK__IN | USOCK__OUT);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    watch(&r, s[0], 0);
    expect_quiet(50 * MS); /* readable and writable, but not watched */
    ck_assert_int_eq(r.calls, 1);
    watch(&r, s[0], USOCK__IN); /* and back */
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__IN);
    ck_assert_int_eq(r.calls, 2);
}
END_TEST

START_TEST(new_watcher_replaces_old)
{
    struct rec a, b;
    int p[2];

    make_pipe(p);
    rec_init(&a);
    rec_init(&b);
    watch(&a, p[0], USOCK__IN);
    watch(&b, p[0], USOCK__IN);
    put_byte(p[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(a.calls, 0);
    ck_assert_int_eq(b.calls, 1);
}
END_TEST

/* Close fd and open a readable pipe whose read end takes the number fd. */
static void reuse_fd_number(int fd)
{
    int q[2];

    close(fd);
    make_pipe(q);
    if (q[0] != fd) {
        ck_assert_int_eq(dup2(q[0], fd), fd);
        close(q[0]);
    }
    put_byte(q[1]);
}

START_TEST(forget_then_close_no_callback)
{
    struct rec r;
    int p[2];

    make_pipe(p);
    rec_init(&r);
    watch(&r, p[0], USOCK__IN);
    put_byte(p[1]);
    ops->io_forget(&rx, p[0]);
    /* The number now names a readable pipe nobody watches. */
    reuse_fd_number(p[0]);
    expect_quiet(50 * MS);
    ck_assert_int_eq(r.calls, 0);
    ops->io_forget(&rx, p[0]); /* twice is harmless */
}
END_TEST

/* The first of two ready watchers forgets and closes the other's fd, and
 * puts a new readable file under that number. */
static void forget_other(struct rec *self)
{
    take_byte(self->io.fd);
    ck_assert_int_eq(self->other->calls, 0);
    ops->io_forget(&rx, self->other->io.fd);
    reuse_fd_number(self->other->io.fd);
}

START_TEST(forget_inside_dispatch)
{
    struct rec a, b;
    int p[2], q[2];

    make_pipe(p);
    make_pipe(q);
    rec_init(&a);
    rec_init(&b);
    a.hook = b.hook = forget_other;
    a.other = &b;
    b.other = &a;
    watch(&a, p[0], USOCK__IN);
    watch(&b, q[0], USOCK__IN);
    put_byte(p[1]);
    put_byte(q[1]);
    /* Make sure both are ready in the same wait. */
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(a.calls + b.calls, 1);
    expect_quiet(50 * MS);
    ck_assert_int_eq(a.calls + b.calls, 1);
}
END_TEST

/* Like forget_other, but the new file under the number is an empty pipe
 * and a third watcher takes it at once: the event the old file had in this
 * same wait must not reach the new watcher. */
static struct rec *rewatcher;

static void forget_other_rewatch(struct rec *self)
{
    int q[2];
    int fd = self->other->io.fd;

    take_byte(self->io.fd);
    ops->io_forget(&rx, fd);
    close(fd);
    make_pipe(q);
    if (q[0] != fd) {
        ck_assert_int_eq(dup2(q[0], fd), fd);
        close(q[0]);
    }
    rewatcher->io.gen = 99; /* another file than the old one */
    watch(rewatcher, fd, USOCK__IN);
}

START_TEST(rewatch_inside_dispatch)
{
    struct rec a, b, c;
    int p[2], q[2];

    make_pipe(p);
    make_pipe(q);
    rec_init(&a);
    rec_init(&b);
    rec_init(&c);
    a.hook = b.hook = forget_other_rewatch;
    a.other = &b;
    b.other = &a;
    a.io.gen = 1;
    b.io.gen = 2;
    rewatcher = &c;
    watch(&a, p[0], USOCK__IN);
    watch(&b, q[0], USOCK__IN);
    put_byte(p[1]);
    put_byte(q[1]);
    int n = run_for(5 * SEC);
    ck_assert_msg(n == 1, "calls %d: a %d b %d c %d", n, a.calls, b.calls, c.calls);
    ck_assert_int_eq(a.calls + b.calls, 1);
    expect_quiet(50 * MS);
    ck_assert_int_eq(a.calls + b.calls, 1);
    ck_assert_int_eq(c.calls, 0);
}
END_TEST

/* A callback that closes its own fd, as a socket closed by its reader. */
static void forget_self(struct rec *self)
{
    take_byte(self->io.fd);
    ops->io_forget(&rx, self->io.fd);
    close(self->io.fd);
}

START_TEST(self_removal_inside_dispatch)
{
    enum { N = 50 };
    struct rec r[N];
    int p[2], i;

    for (i = 0; i < N; i++) {
        make_pipe(p);
        put_byte(p[1]);
        rec_init(&r[i]);
        r[i].hook = forget_self;
        watch(&r[i], p[0], USOCK__IN);
    }
    /* Every one is ready before the wait: one dispatch reports them all,
     * although each callback moves slots around. */
    ck_assert_int_eq(run_for(5 * SEC), N);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(r[i].calls, 1);
    }
    expect_quiet(50 * MS);
}
END_TEST

START_TEST(peer_close_reports_in)
{
    struct rec r, s;
    int sp[2], p[2];

    make_pair(sp);
    make_pipe(p);
    rec_init(&r);
    rec_init(&s);
    watch(&r, sp[0], USOCK__IN);
    watch(&s, p[0], USOCK__IN);
    close(sp[1]);
    close(p[1]);
    run_until_called(&r);
    run_until_called(&s);
    ck_assert(r.last & USOCK__IN);
    ck_assert(s.last & USOCK__IN);
    ck_assert(!(r.seen & USOCK__ERR));
    ck_assert(!(s.seen & USOCK__ERR));
}
END_TEST

START_TEST(watch_fd_not_open_reports_err)
{
    struct rec r, big;
    int p[2];

    make_pipe(p);
    close(p[0]);
    close(p[1]);
    rec_init(&r);
    rec_init(&big);
    watch(&r, p[0], USOCK__IN);
    watch(&big, 1000000, USOCK__IN); /* grows the tables on the way */
    run_until_called(&r);
    run_until_called(&big);
    ck_assert_int_eq(r.last, USOCK__IN | USOCK__OUT | USOCK__ERR);
    ck_assert_int_eq(big.last, USOCK__IN | USOCK__OUT | USOCK__ERR);
    ops->io_forget(&rx, p[0]);
    ops->io_forget(&rx, 1000000);
    r.calls = big.calls = 0;
    expect_quiet(50 * MS);
    ck_assert_int_eq(r.calls + big.calls, 0);
}
END_TEST

/* An fd closed after a wait saw it: poll(2) reports POLLNVAL; epoll drops
 * such an fd silently, so on ev it is enough that nothing breaks.  An fd
 * closed before any wait saw it is reported by both. */
START_TEST(closed_while_watched)
{
    struct rec r;
    int p[2];

    make_pipe(p);
    rec_init(&r);
    watch(&r, p[0], USOCK__IN);
    ck_assert_int_eq(run_for(0), 0);
    close(p[0]);
    if (is_poll()) {
        ck_assert_int_eq(run_for(5 * SEC), 1);
        ck_assert_int_eq(r.last, USOCK__IN | USOCK__OUT | USOCK__ERR);
    } else {
        ck_assert_int_ge(run_for(50 * MS), 0);
    }
    ops->io_forget(&rx, p[0]);
    r.calls = 0;
    expect_quiet(50 * MS);
    ck_assert_int_eq(r.calls, 0);

    make_pipe(p);
    watch(&r, p[0], USOCK__IN);
    close(p[0]);
    run_until_called(&r);
    ck_assert_int_eq(r.last, USOCK__IN | USOCK__OUT | USOCK__ERR);
    ops->io_forget(&rx, p[0]);
    close(p[1]);
}
END_TEST

START_TEST(high_fd_number)
{
    struct rec r;
    rlim_t lim = raise_nofile();
    int p[2], fd;

    ck_assert_uint_gt(lim, 1000);
    fd = lim > 1000001 ? 1000000 : (int)lim - 1;
    make_pipe(p);
    ck_assert_int_eq(dup2(p[0], fd), fd);
    rec_init(&r);
    watch(&r, fd, USOCK__IN);
    put_byte(p[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__IN);
    ops->io_forget(&rx, fd);
    close(fd);
}
END_TEST

START_TEST(negative_fd_is_ebadf)
{
    struct rec r;

    rec_init(&r);
    errno = 0;
    ck_assert_int_eq(ops->io_set(&rx, &r.io, -1, USOCK__IN), -1);
    ck_assert_int_eq(errno, EBADF);
    ops->io_forget(&rx, -1);
    ck_assert_int_eq(run_for(0), 0);
}
END_TEST

/* Thread body: wake the reactor `arg` up after 100 ms. */
static void *wake_later(void *arg)
{
    struct usock__reactor *r = arg;
    struct timespec ts = {0, 100 * MS};

    nanosleep(&ts, NULL);
    r->ops->wakeup(r);
    return NULL;
}

START_TEST(wakeup_from_thread)
{
    pthread_t t;
    int64_t t0, t1;

    t0 = now();
    ck_assert_int_eq(pthread_create(&t, NULL, wake_later, &rx), 0);
    ck_assert_int_eq(ops->run_once(&rx, USOCK__NEVER), 0);
    t1 = now();
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_ge(t1 - t0, 50 * MS); /* it did block */
    ck_assert_int_lt(t1 - t0, 5 * SEC);
    /* The wake-up was consumed: the next wait lasts until its deadline. */
    expect_quiet(50 * MS);
}
END_TEST

START_TEST(wakeup_before_wait)
{
    int64_t t0 = now();

    ops->wakeup(&rx);
    ops->wakeup(&rx);
    ck_assert_int_eq(ops->run_once(&rx, USOCK__NEVER), 0);
    ck_assert_int_lt(now() - t0, 5 * SEC);
    expect_quiet(50 * MS); /* both were drained */
}
END_TEST

static volatile sig_atomic_t errno_clobbered;

static void wake_from_handler(int sig)
{
    int saved = errno;

    (void)sig;
    errno = EDOM;
    ops->wakeup(&rx);
    if (errno != EDOM) {
        errno_clobbered = 1;
    }
    errno = saved;
}

START_TEST(wakeup_from_signal_handler)
{
    struct sigaction sa;
    struct itimerval it = {{0, 0}, {0, 100000}};
    int64_t t0 = now();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = wake_from_handler;
    sa.sa_flags = SA_RESTART;
    ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
    ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
    ck_assert_int_eq(ops->run_once(&rx, USOCK__NEVER), 0);
    ck_assert_int_lt(now() - t0, 5 * SEC);
    ck_assert(!errno_clobbered);
}
END_TEST

START_TEST(deadline_zero_never_blocks)
{
    struct rec r;
    int p[2];
    int64_t t0;

    make_pipe(p);
    rec_init(&r);
    watch(&r, p[0], USOCK__IN);
    t0 = now();
    ck_assert_int_eq(ops->run_once(&rx, 0), 0);
    ck_assert_int_lt(now() - t0, 1 * SEC);
    put_byte(p[1]);
    ck_assert_int_eq(ops->run_once(&rx, 0), 1);
    ck_assert_int_eq(r.last, USOCK__IN);
}
END_TEST

START_TEST(deadline_in_past_returns_at_once)
{
    struct rec r;
    int p[2];
    int64_t t0;

    make_pipe(p);
    rec_init(&r);
    watch(&r, p[0], USOCK__IN);
    t0 = now();
    ck_assert_int_eq(ops->run_once(&rx, t0 - 1 * SEC), 0);
    ck_assert_int_eq(ops->run_once(&rx, 1), 0);
    ck_assert_int_lt(now() - t0, 1 * SEC);
    put_byte(p[1]);
    ck_assert_int_eq(ops->run_once(&rx, now() - 1), 1);
}
END_TEST

/* Run until every watcher in r[0..n) with a stride of `step` has been
 * called, at most 10 s. */
static void run_until_all(struct rec *r, int n, int step)
{
    int64_t end = now() + 10 * SEC;
    int i, missing = n;

    while (missing > 0 && now() < end) {
        ck_assert_int_ge(run_for(1 * SEC), 0);
        for (missing = 0, i = 0; i < n; i += step) {
            missing += r[i].calls == 0;
        }
    }
    ck_assert_int_eq(missing, 0);
}

START_TEST(many_fds_all_reported)
{
    enum { N = 2000 };
    struct rec *r = calloc(N, sizeof(*r));
    int(*sp)[2] = calloc(N, sizeof(*sp));
    int i;

    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(sp);
    ck_assert_uint_ge(raise_nofile(), 2 * N + 64);
    for (i = 0; i < N; i++) {
        make_pair(sp[i]);
        put_byte(sp[i][1]);
        rec_init(&r[i]);
        watch(&r[i], sp[i][0], USOCK__IN);
    }
    run_until_all(r, N, 1);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(r[i].last, USOCK__IN);
        r[i].calls = 0;
        if (i % 2 == 0) {
            watch(&r[i], sp[i][0], 0); /* removal from the middle */
        }
    }
    run_until_all(r + 1, N - 1, 2);
    for (i = 0; i < N; i += 2) {
        ck_assert_int_eq(r[i].calls, 0);
    }
    for (i = 0; i < N; i++) {
        ops->io_forget(&rx, sp[i][0]);
        close(sp[i][0]);
        close(sp[i][1]);
    }
    free(sp);
    free(r);
}
END_TEST

static void add_common_tests(TCase *tc)
{
    tcase_add_test(tc, idle_fd_waits_until_deadline);
    tcase_add_test(tc, readable_fires_in);
    tcase_add_test(tc, writable_fires_out);
    tcase_add_test(tc, mask_changes_apply);
    tcase_add_test(tc, mask_zero_stops_callbacks);
    tcase_add_test(tc, new_watcher_replaces_old);
    tcase_add_test(tc, forget_then_close_no_callback);
    tcase_add_test(tc, forget_inside_dispatch);
    tcase_add_test(tc, rewatch_inside_dispatch);
    tcase_add_test(tc, self_removal_inside_dispatch);
    tcase_add_test(tc, peer_close_reports_in);
    tcase_add_test(tc, watch_fd_not_open_reports_err);
    tcase_add_test(tc, closed_while_watched);
    tcase_add_test(tc, high_fd_number);
    tcase_add_test(tc, negative_fd_is_ebadf);
    tcase_add_test(tc, wakeup_from_thread);
    tcase_add_test(tc, wakeup_before_wait);
    tcase_add_test(tc, wakeup_from_signal_handler);
    tcase_add_test(tc, deadline_zero_never_blocks);
    tcase_add_test(tc, deadline_in_past_returns_at_once);
    tcase_add_test(tc, many_fds_all_reported);
}

/* ==========================================================================
 *  libev on a foreign (daemon's) loop
 * ========================================================================== */

#ifdef HAVE_LIBEV

/* The daemon: its own loop, with an fd watcher that never fires (so
 * EVRUN_ONCE blocks) and a safety timer that ends a stuck ev_run. */
struct daemon {
    struct ev_loop *loop;
    int p[2];
    ev_io never;
    ev_timer safety;
    int safety_fired;
};

static int ticks;
static int64_t last_tick;
static struct ev_loop *break_loop; /* on_tick ends its ev_run ... */
static int64_t break_after;        /* ... at the first tick from then on */

static void on_tick(void *owner)
{
    ck_assert_ptr_eq(owner, &ticks);
    ticks++;
    last_tick = now();
    if (break_loop != NULL && last_tick >= break_after) {
        ev_break(break_loop, EVBREAK_ONE);
    }
}

static void on_never(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void on_busy(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    *(int *)t->data = 1;
}

static void on_safety(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct daemon *d = t->data;

    (void)revents;
    d->safety_fired = 1;
    ev_break(loop, EVBREAK_ALL);
}

/* safety_s > 0 arms the safety timer; `keep_alive` starts the blocking fd
 * watcher, and the safety timer is unref'd when it is not. */
static void daemon_open(struct daemon *d, double safety_s, int keep_alive)
{
    memset(d, 0, sizeof(*d));
    d->loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(d->loop);
    make_pipe(d->p);
    ev_io_init(&d->never, on_never, d->p[0], EV_READ);
    ev_timer_init(&d->safety, on_safety, safety_s, 0.);
    d->safety.data = d;
    if (keep_alive) {
        ev_io_start(d->loop, &d->never);
    }
    if (safety_s > 0) {
        ev_timer_start(d->loop, &d->safety);
        if (!keep_alive) {
            ev_unref(d->loop);
        }
    }
}

static void daemon_close(struct daemon *d, int keep_alive)
{
    if (ev_is_active(&d->safety)) {
        if (!keep_alive) {
            ev_ref(d->loop);
        }
        ev_timer_stop(d->loop, &d->safety);
    }
    ev_io_stop(d->loop, &d->never);
    ev_loop_destroy(d->loop);
    close(d->p[0]);
    close(d->p[1]);
}

static void foreign_open(struct usock__reactor *fr, struct daemon *d)
{
    memset(fr, 0, sizeof(*fr));
    fr->ops = &usock__reactor_ev;
    fr->hooks.tick = on_tick;
    fr->hooks.owner = &ticks;
    ticks = 0;
    ck_assert_int_eq(fr->ops->init(fr, d->loop), 0);
}

START_TEST(foreign_prepare_ticks)
{
    struct daemon d;
    struct usock__reactor fr;

    daemon_open(&d, 3.0, 1);
    foreign_open(&fr, &d);
    ev_run(d.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(ticks, 1);
    ev_run(d.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(ticks, 2);
    fr.ops->destroy(&fr);
    ev_run(d.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(ticks, 2); /* no tick after destroy */
    daemon_close(&d, 1);
}
END_TEST

START_TEST(foreign_timer_wakes_loop)
{
    struct daemon d;
    struct usock__reactor fr;
    int64_t t0, deadline;

    daemon_open(&d, 3.0, 1);
    foreign_open(&fr, &d);
    t0 = now();
    deadline = t0 + 20 * MS;
    fr.ops->timer_set(&fr, deadline);
    /* The daemon runs its loop until a tick at or after the deadline: the
     * loop sleeps until our alarm, not until its 3 s safety timer. */
    break_loop = d.loop;
    break_after = deadline;
    ev_run(d.loop, 0);
    break_loop = NULL;
    ck_assert_int_ge(ticks, 2);
    ck_assert_int_ge(last_tick, deadline);
    ck_assert_int_lt(now() - t0, 1500 * MS);
    ck_assert(!d.safety_fired);
    fr.ops->destroy(&fr);
    daemon_close(&d, 1);
}
END_TEST

START_TEST(foreign_timer_never_disarms)
{
    struct daemon d;
    struct usock__reactor fr;
    int64_t t0;

    daemon_open(&d, 0.3, 1);
    foreign_open(&fr, &d);
    fr.ops->timer_set(&fr, now() + 20 * MS);
    fr.ops->timer_set(&fr, USOCK__NEVER);
    t0 = now();
    ev_run(d.loop, EVRUN_ONCE);
    ck_assert(d.safety_fired);
    ck_assert_int_ge(now() - t0, 250 * MS);
    fr.ops->destroy(&fr);
    daemon_close(&d, 1);
}
END_TEST

START_TEST(foreign_timer_past_does_not_sleep)
{
    struct daemon d;
    struct usock__reactor fr;
    int64_t t0;

    daemon_open(&d, 3.0, 1);
    foreign_open(&fr, &d);
    ev_run(d.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(ticks, 1);
    t0 = now();
    fr.ops->timer_set(&fr, t0 - 1);
    ev_run(d.loop, EVRUN_ONCE); /* ticks, then must not sleep */
    ev_run(d.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(ticks, 3);
    ck_assert_int_lt(now() - t0, 1 * SEC);
    ck_assert(!d.safety_fired);
    fr.ops->destroy(&fr);
    daemon_close(&d, 1);
}
END_TEST

/* ev_run(loop, 0) returns at once when nothing of the daemon's is active:
 * the safety timer (unref'd) would end it after 2 s otherwise. */
static void expect_loop_ends(struct daemon *d)
{
    int64_t t0 = now();

    ev_run(d->loop, 0);
    ck_assert(!d->safety_fired);
    ck_assert_int_lt(now() - t0, 1 * SEC);
}

START_TEST(foreign_internal_watchers_are_unref)
{
    struct daemon d;
    struct usock__reactor fr;
    ev_timer busy;
    int busy_fired = 0;

    daemon_open(&d, 2.0, 0);
    foreign_open(&fr, &d);
    fr.ops->timer_set(&fr, now() + 10 * SEC);
    expect_loop_ends(&d);
    /* Let the alarm expire while a daemon timer keeps the loop alive. */
    fr.ops->timer_set(&fr, now() + 10 * MS);
    ev_timer_init(&busy, on_busy, 0.1, 0.);
    busy.data = &busy_fired;
    ev_timer_start(d.loop, &busy);
    ev_run(d.loop, 0);
    ck_assert(busy_fired); /* the loop lived as long as the daemon's timer */
    ck_assert(!d.safety_fired);
    expect_loop_ends(&d);
    fr.ops->timer_set(&fr, now() - 1); /* the idle path */
    expect_loop_ends(&d);
    fr.ops->wakeup(&fr);
    expect_loop_ends(&d);
    fr.ops->destroy(&fr);
    expect_loop_ends(&d); /* references balanced after destroy */
    daemon_close(&d, 0);
}
END_TEST

START_TEST(foreign_io_and_wakeup)
{
    struct daemon d;
    struct usock__reactor fr;
    struct rec r;
    pthread_t t;
    int64_t t0;
    int sp[2], i;

    daemon_open(&d, 3.0, 1);
    foreign_open(&fr, &d);
    make_pair(sp);
    rec_init(&r);
    ck_assert_int_eq(fr.ops->io_set(&fr, &r.io, sp[0], USOCK__IN), 0);
    put_byte(sp[1]);
    for (i = 0; i < 10 && r.calls == 0; i++) {
        ev_run(d.loop, EVRUN_ONCE);
    }
    ck_assert_int_eq(r.last, USOCK__IN);
    fr.ops->io_forget(&fr, sp[0]);
    /* A wake-up from another thread ends the daemon's blocking
     * iteration, and the next iteration ticks. */
    t0 = now();
    ck_assert_int_eq(pthread_create(&t, NULL, wake_later, &fr), 0);
    ev_run(d.loop, EVRUN_ONCE);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_ge(now() - t0, 50 * MS);
    ck_assert_int_lt(now() - t0, 2 * SEC);
    ck_assert(!d.safety_fired);
    i = ticks;
    ev_run(d.loop, EVRUN_NOWAIT);
    ck_assert_int_eq(ticks, i + 1);
    fr.ops->destroy(&fr);
    daemon_close(&d, 1);
}
END_TEST

static void add_foreign_tests(TCase *tc)
{
    tcase_add_test(tc, foreign_prepare_ticks);
    tcase_add_test(tc, foreign_timer_wakes_loop);
    tcase_add_test(tc, foreign_timer_never_disarms);
    tcase_add_test(tc, foreign_timer_past_does_not_sleep);
    tcase_add_test(tc, foreign_internal_watchers_are_unref);
    tcase_add_test(tc, foreign_io_and_wakeup);
}

#endif /* HAVE_LIBEV */

/* ==========================================================================
 *  Shared parts: picking a backend, the clock
 * ========================================================================== */

START_TEST(pick_follows_environment)
{
#if defined(HAVE_EPOLL)
    const struct usock__reactor_ops *dflt = &usock__reactor_epoll;
#elif defined(HAVE_LIBEV)
    const struct usock__reactor_ops *dflt = &usock__reactor_ev;
#else
    const struct usock__reactor_ops *dflt = &usock__reactor_poll;
#endif

    unsetenv("USOCKET_REACTOR");
    ck_assert_ptr_eq(usock__reactor_pick(), dflt);
    /* A hub in a daemon's libev loop runs on ev whatever the default. */
    errno = 0;
#ifdef HAVE_LIBEV
    ck_assert_ptr_eq(usock__reactor_pick_ev(), &usock__reactor_ev);
    setenv("USOCKET_REACTOR", "ev", 1);
    ck_assert_ptr_eq(usock__reactor_pick_ev(), &usock__reactor_ev);
    setenv("USOCKET_REACTOR", "epoll", 1);
    ck_assert_ptr_null(usock__reactor_pick_ev());
    ck_assert_int_eq(errno, ENOTSUP);
    unsetenv("USOCKET_REACTOR");
#else
    ck_assert_ptr_null(usock__reactor_pick_ev());
    ck_assert_int_eq(errno, ENOTSUP);
#endif
    setenv("USOCKET_REACTOR", "", 1);
    ck_assert_ptr_eq(usock__reactor_pick(), dflt);
    setenv("USOCKET_REACTOR", "poll", 1);
    ck_assert_ptr_eq(usock__reactor_pick(), &usock__reactor_poll);
    ck_assert_str_eq(usock__reactor_pick()->name, "poll");
    setenv("USOCKET_REACTOR", "ev", 1);
    errno = 0;
#ifdef HAVE_LIBEV
    ck_assert_ptr_eq(usock__reactor_pick(), &usock__reactor_ev);
    ck_assert_str_eq(usock__reactor_pick()->name, "ev");
#else
    ck_assert_ptr_null(usock__reactor_pick());
    ck_assert_int_eq(errno, ENOTSUP);
#endif
    setenv("USOCKET_REACTOR", "epoll", 1);
    errno = 0;
#ifdef HAVE_EPOLL
    ck_assert_ptr_eq(usock__reactor_pick(), &usock__reactor_epoll);
    ck_assert_str_eq(usock__reactor_pick()->name, "epoll");
#else
    ck_assert_ptr_null(usock__reactor_pick());
    ck_assert_int_eq(errno, ENOTSUP);
#endif
    setenv("USOCKET_REACTOR", "kqueue", 1);
    errno = 0;
    ck_assert_ptr_null(usock__reactor_pick());
    ck_assert_int_eq(errno, ENOTSUP);
}
END_TEST

START_TEST(ms_until_rounds_up)
{
    int64_t d, after;
    int ms;

    ck_assert_int_eq(usock__ms_until(USOCK__NEVER), -1);
    ck_assert_int_eq(usock__ms_until(0), 0);
    ck_assert_int_eq(usock__ms_until(now() - 1), 0);
    d = now() + 2500000; /* 2.5 ms */
    ms = usock__ms_until(d);
    after = now();
    ck_assert_int_le(ms, 3);
    ck_assert_int_ge((int64_t)ms * MS, d - after); /* never ends early */
    ms = usock__ms_until(now() + 1000 * SEC);
    ck_assert_int_le(ms, 1000000);
    ck_assert_int_ge(ms, 999000);
    ck_assert_int_eq(usock__ms_until(INT64_MAX - 1), INT_MAX);
}
END_TEST

START_TEST(clock_is_monotonic)
{
    struct timespec ts;
    int64_t a, b, c;

    a = usock__clock_ns();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    b = (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
    c = usock__clock_ns();
    ck_assert_int_le(a, b);
    ck_assert_int_le(b, c);
}
END_TEST

START_TEST(poll_refuses_foreign_loop)
{
    struct usock__reactor r;
    int fake_loop;

    memset(&r, 0, sizeof(r));
    r.ops = &usock__reactor_poll;
    errno = 0;
    ck_assert_int_eq(r.ops->init(&r, &fake_loop), -1);
    ck_assert_int_eq(errno, ENOTSUP);
}
END_TEST

#ifdef HAVE_EPOLL
/* ==========================================================================
 *  The epoll backend only
 * ========================================================================== */

START_TEST(epoll_refuses_foreign_loop)
{
    struct usock__reactor r;
    int fake_loop;

    memset(&r, 0, sizeof(r));
    r.ops = &usock__reactor_epoll;
    errno = 0;
    ck_assert_int_eq(r.ops->init(&r, &fake_loop), -1);
    ck_assert_int_eq(errno, ENOTSUP);
}
END_TEST

/* 1 when fd is readable now. */
static int readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* The wait fd is the epoll set: readable while an event or a wakeup is
 * pending, not once run_once(0) took it in; its number stays. */
START_TEST(epoll_wait_fd_follows_events)
{
    struct rec r;
    int p[2], fd;

    fd = ops->wait_fd(&rx);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ops->wait_fd(&rx), fd);
    make_pipe(p);
    rec_init(&r);
    watch(&r, p[0], USOCK__IN);
    ck_assert_int_eq(rx.dirty, 1); /* the registration waits for a pass */
    ck_assert_int_eq(ops->run_once(&rx, 0), 0);
    ck_assert_int_eq(rx.dirty, 0);
    ck_assert(!readable_now(fd));
    put_byte(p[1]);
    ck_assert(readable_now(fd));
    ck_assert_int_eq(ops->run_once(&rx, 0), 1);
    take_byte(p[0]);
    ck_assert(!readable_now(fd));
    ops->wakeup(&rx);
    ck_assert(readable_now(fd));
    ck_assert_int_eq(ops->run_once(&rx, 0), 0);
    ck_assert(!readable_now(fd));
    /* Mask 0 while readable: the next pass narrows the kernel's mask, and
     * the fd is quiet after it. */
    put_byte(p[1]);
    watch(&r, p[0], 0);
    ck_assert_int_eq(ops->run_once(&rx, 0), 0);
    ck_assert(!readable_now(fd));
    ck_assert_int_eq(r.calls, 1);
    ops->io_forget(&rx, p[0]);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* epoll cannot watch a regular file (EPERM): it is always ready, as
 * poll(2) says, until forgotten. */
START_TEST(epoll_regular_file_always_ready)
{
    struct rec r;
    char path[] = "/tmp/usock-epoll-XXXXXX";
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    unlink(path);
    rec_init(&r);
    watch(&r, fd, USOCK__IN);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__IN);
    watch(&r, fd, USOCK__IN | USOCK__OUT);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(r.last, USOCK__IN | USOCK__OUT);
    ck_assert_int_eq(rx.dirty, 1); /* an embedding loop must not block */
    ops->io_forget(&rx, fd);
    r.calls = 0;
    expect_quiet(50 * MS);
    ck_assert_int_eq(r.calls, 0);
    ck_assert_int_eq(rx.dirty, 0);
    close(fd);
}
END_TEST

/* A file closed without io_forget (breaking the contract), its number
 * then reused by another file under a new generation: the new watcher
 * gets the new file's events, and nothing breaks. */
START_TEST(epoll_fd_reused_without_forget)
{
    struct rec a, b;
    int p[2], q[2];

    make_pipe(p);
    rec_init(&a);
    rec_init(&b);
    a.io.gen = 1;
    b.io.gen = 2;
    watch(&a, p[0], USOCK__IN);
    ck_assert_int_eq(run_for(0), 0); /* registered */
    close(p[0]);
    make_pipe(q);
    if (q[0] != p[0]) {
        ck_assert_int_eq(dup2(q[0], p[0]), p[0]);
        close(q[0]);
    }
    watch(&b, p[0], USOCK__IN);
    put_byte(q[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(b.last, USOCK__IN);
    ck_assert_int_eq(a.calls, 0);
    /* A widening on the same file whose registration the kernel dropped
     * (closed without forget, same gen): MOD says ENOENT, ADD follows. */
    take_byte(p[0]);
    close(p[0]);
    make_pipe(q);
    if (q[0] != p[0]) {
        ck_assert_int_eq(dup2(q[0], p[0]), p[0]);
        close(q[0]);
    }
    watch(&b, p[0], USOCK__IN | USOCK__OUT);
    put_byte(q[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(b.last, USOCK__IN);
    ops->io_forget(&rx, p[0]);
    close(p[0]);
    close(p[1]);
    close(q[1]);
}
END_TEST

/* The same open file watched again under a new generation while still in
 * the set (ADD says EEXIST): it keeps reporting. */
START_TEST(epoll_same_file_new_gen)
{
    struct rec a, b;
    int p[2];

    make_pipe(p);
    rec_init(&a);
    rec_init(&b);
    a.io.gen = 5;
    b.io.gen = 6;
    watch(&a, p[0], USOCK__IN);
    ck_assert_int_eq(run_for(0), 0);
    watch(&b, p[0], USOCK__IN);
    ck_assert_int_eq(a.io.events, 0);
    put_byte(p[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ck_assert_int_eq(b.calls, 1);
    ck_assert_int_eq(a.calls, 0);
    ops->io_forget(&rx, p[0]);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* A peer hang-up on an fd whose mask went to 0: reported to nobody, and
 * the wait does not spin on it (epoll reports EPOLLHUP whatever the
 * mask). */
START_TEST(epoll_hangup_unwatched_does_not_spin)
{
    struct rec r;
    int sp[2];

    make_pair(sp);
    rec_init(&r);
    watch(&r, sp[0], USOCK__IN);
    ck_assert_int_eq(run_for(0), 0);
    watch(&r, sp[0], 0);
    close(sp[1]);
    ck_assert_int_eq(run_for(0), 0); /* narrowed here */
    expect_quiet(50 * MS);
    ck_assert_int_eq(r.calls, 0);
    watch(&r, sp[0], USOCK__IN); /* and back: the hang-up is reported */
    run_until_called(&r);
    ck_assert(r.last & USOCK__IN);
    ops->io_forget(&rx, sp[0]);
    close(sp[0]);
}
END_TEST

/* Allocation failures in io_set (the fd table, the change list) are
 * ENOMEM and leave the reactor working. */
START_TEST(epoll_io_set_enomem)
{
    struct rec r, big;
    int p[2];

    make_pipe(p);
    rec_init(&r);
    rec_init(&big);
    usock__alloc_fail_in(1);
    errno = 0;
    ck_assert_int_eq(ops->io_set(&rx, &big.io, 100000, USOCK__IN), -1);
    ck_assert_int_eq(errno, ENOMEM);
    usock__alloc_fail_in(0);
    watch(&r, p[0], USOCK__IN);
    put_byte(p[1]);
    ck_assert_int_eq(run_for(5 * SEC), 1);
    ops->io_forget(&rx, p[0]);
    close(p[0]);
    close(p[1]);
}
END_TEST

static void add_epoll_tests(TCase *tc)
{
    tcase_add_test(tc, epoll_refuses_foreign_loop);
    tcase_add_test(tc, epoll_wait_fd_follows_events);
    tcase_add_test(tc, epoll_regular_file_always_ready);
    tcase_add_test(tc, epoll_fd_reused_without_forget);
    tcase_add_test(tc, epoll_same_file_new_gen);
    tcase_add_test(tc, epoll_hangup_unwatched_does_not_spin);
    tcase_add_test(tc, epoll_io_set_enomem);
}
#endif /* HAVE_EPOLL */

static Suite *reactor_suite(void)
{
    Suite *s = suite_create("reactor");
    TCase *tc;

    tc = tcase_create("reactor:common");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, pick_follows_environment);
    tcase_add_test(tc, ms_until_rounds_up);
    tcase_add_test(tc, clock_is_monotonic);
    tcase_add_test(tc, poll_refuses_foreign_loop);
    suite_add_tcase(s, tc);
#ifdef HAVE_LIBEV
    tc = tcase_create("reactor:ev");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup_ev, teardown);
    add_common_tests(tc);
    add_foreign_tests(tc);
    suite_add_tcase(s, tc);
#endif
    tc = tcase_create("reactor:poll");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup_poll, teardown);
    add_common_tests(tc);
    suite_add_tcase(s, tc);
#ifdef HAVE_EPOLL
    tc = tcase_create("reactor:epoll");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup_epoll, teardown);
    add_common_tests(tc);
    add_epoll_tests(tc);
    suite_add_tcase(s, tc);
#endif
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(reactor_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
