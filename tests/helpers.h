/*
 * Shared helpers of the Check suites: reactor tcases, errno-aware and
 * duration assertions, loopback listeners and pairs, fd limits.
 *
 * Include "config.h" first, then <check.h>, <usocket.h> and this file.
 */
#ifndef USOCK_TESTS_HELPERS_H
#define USOCK_TESTS_HELPERS_H

#include <check.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <usocket.h>

/* Every socket a test opens through usock_socket or usock_accept stays
 * reachable from a registry until it is closed (usock_close is
 * test_close), so LeakSanitizer (make check-asan) reports only memory the
 * library itself loses.  The per-test teardown (below) closes what a test
 * left open in the registry, as a clean-up, before it counts what leaked.
 * errno is kept. */
usock_t *test_track(usock_t *s);
int test_close(usock_t *s);
#define usock_socket(f, t, p) test_track(usock_socket((f), (t), (p)))
#define usock_accept(s, a) test_track(usock_accept((s), (a)))
#define usock_close(s) test_close(s)

/* Per-test accounting, on for every tcase of every suite: tcases made with
 * tcase_create (which this header turns into test_tcase_create) and by
 * add_reactor_tcases fail a test that leaves a task alive, or after the
 * registry's sockets are closed, a socket object alive or an fd open that
 * was not open when it started (the thread's own reactor excepted): what
 * the library itself leaked, and raw fds the test forgot.  Counted from
 * /proc/self/fd and hidden counters of the library. */
TCase *test_tcase_create(const char *name);
/* A test whose thread's own context ends cancelled cannot run its tasks to
 * their end: it says how many it leaves alive. */
void test_allow_tasks(size_t n);
#ifndef USOCK_HELPERS_C
#define tcase_create(name) test_tcase_create(name)
#endif

/* Add tcases "<name>:ev" (when built with libev) and "<name>:poll" to s.
 * Each has a checked fixture that selects its reactor through
 * USOCKET_REACTOR, gives the thread's hub that reactor before the test
 * runs (so the test's own blocking calls wait on it too) and checks that
 * it is the one named, puts SIGPIPE back to SIG_DFL, and does the
 * accounting above; add(tc) adds the tests and the tcase gets a timeout
 * of timeout_s seconds. */
void add_reactor_tcases(Suite *s, const char *name, void (*add)(TCase *tc),
                        int timeout_s);

/* The symbolic name of an errno value ("ETIMEDOUT"), for messages. */
const char *test_errname(int e);

/* Assert that expr (evaluated once) fails with -1 and errno e. */
#define ck_assert_errno(expr, e)                                              \
    do {                                                                      \
        errno = 0;                                                            \
        long ck_rc_ = (long)(expr);                                           \
        int ck_err_ = errno, ck_want_ = (e);                                  \
        ck_assert_msg(ck_rc_ == -1 && ck_err_ == ck_want_,                    \
                      "%s: expected -1 %s (%s), got %ld %s (%s)", #expr,      \
                      test_errname(ck_want_), strerror(ck_want_), ck_rc_,     \
                      test_errname(ck_err_), strerror(ck_err_));              \
    } while (0)

/* Assert that expr (evaluated once, a pointer) is NULL with errno e. */
#define ck_assert_errno_null(expr, e)                                         \
    do {                                                                      \
        errno = 0;                                                            \
        const void *ck_p_ = (expr);                                           \
        int ck_err_ = errno, ck_want_ = (e);                                  \
        ck_assert_msg(ck_p_ == NULL && ck_err_ == ck_want_,                   \
                      "%s: expected NULL %s (%s), got %p %s (%s)", #expr,     \
                      test_errname(ck_want_), strerror(ck_want_), ck_p_,      \
                      test_errname(ck_err_), strerror(ck_err_));              \
    } while (0)

/* Assert that expr (evaluated once) returns 0, printing errno if not. */
#define ck_assert_ok(expr)                                                    \
    do {                                                                      \
        errno = 0;                                                            \
        long ck_rc_ = (long)(expr);                                           \
        int ck_err_ = errno;                                                  \
        ck_assert_msg(ck_rc_ == 0, "%s: expected 0, got %ld %s (%s)", #expr,  \
                      ck_rc_, test_errname(ck_err_), strerror(ck_err_));      \
    } while (0)

/* Assert that expr (evaluated once) returns exactly v (a count). */
#define ck_assert_count(expr, v)                                              \
    do {                                                                      \
        errno = 0;                                                            \
        long ck_rc_ = (long)(expr), ck_v_ = (long)(v);                        \
        int ck_err_ = errno;                                                  \
        ck_assert_msg(ck_rc_ == ck_v_, "%s: expected %ld, got %ld %s (%s)",   \
                      #expr, ck_v_, ck_rc_, test_errname(ck_err_),            \
                      strerror(ck_err_));                                     \
    } while (0)

/* Assert that expr (evaluated once, a pointer) is not NULL. */
#define ck_assert_nonnull(expr)                                               \
    ({                                                                        \
        errno = 0;                                                            \
        __typeof__(expr) ck_p_ = (expr);                                      \
        int ck_err_ = errno;                                                  \
        ck_assert_msg(ck_p_ != NULL, "%s: NULL %s (%s)", #expr,               \
                      test_errname(ck_err_), strerror(ck_err_));              \
        ck_p_;                                                                \
    })

/* USOCK_TEST_TIMEOUT_MULTIPLIER (default 1): widens upper time bounds under
 * sanitizers and valgrind. */
double test_mult(void);

/* 1 when the suite runs under valgrind; under ASan, TSan or valgrind. */
int test_under_valgrind(void);
int test_sanitized(void);

/* Slack added to every upper time bound, in seconds. */
#define TEST_SLACK 0.1

/* The catalog's timing tolerance (RELIABILITY.md "tol"): 20 ms on an idle
 * machine, times test_mult() under sanitizers and valgrind. */
#define TEST_TOL 0.02

/* A timing row at the catalog's tolerance.  make check shares two cores
 * between two suites, so one late wake-up may be the machine's, not the
 * library's: el[0..n) are n trials of one call whose figure is t.  Each
 * must lie in [t, t + 0.3 s * mult] (never early, never hung) and their
 * median in [t, t + tol * mult].  `what` names the call in the message;
 * with USOCK_TEST_TIMING set, every figure is printed to stderr. */
void test_assert_timing(const char *what, double t, double tol,
                        const double *el, int n);

/* Assert lo <= usock_now() - start <= hi * test_mult() + TEST_SLACK. */
#define ck_assert_duration(start, lo, hi)                                     \
    do {                                                                      \
        double ck_el_ = usock_now() - (start);                                \
        double ck_lo_ = (lo), ck_hi_ = (hi) * test_mult() + TEST_SLACK;       \
        ck_assert_msg(ck_el_ >= ck_lo_ - 1e-6 && ck_el_ <= ck_hi_,            \
                      "took %.6f s, expected [%.6f, %.6f]", ck_el_, ck_lo_,   \
                      ck_hi_);                                                \
    } while (0)

/* A TCP listener on 127.0.0.1, port 0; its address goes to *bound (may be
 * NULL).  Fails the test on error. */
usock_t *test_listener(usock_addr_t *bound);

/* The same on "127.0.0.1" (AF_INET) or "::1" (AF_INET6). */
usock_t *test_listener_family(int family, usock_addr_t *bound);

/* A connected loopback TCP pair (AF_INET), both with timeout USOCK_NONE.
 * Needs no task: a plain connect, then accept, each bounded by 5 s.
 * Returns 0 or fails the test. */
int test_pair(usock_t **client, usock_t **server);

/* Make the soft RLIMIT_NOFILE at least `want` (up to the hard limit, which
 * is raised too when allowed).  0 when the soft limit is now >= want. */
int raise_nofile(rlim_t want);

/* Spawn a task that sleeps `delay` s, then sendall's a copy of buf[0..n)
 * on s (n == 0: shuts s down for writing instead).  Returns the task id. */
int test_send_after(usock_t *s, double delay, const void *buf, size_t n);

/* One blocking call run in its own task by test_spawn_op, and its outcome. */
enum test_op_kind {
    TEST_RECV,     /* usock_recv(s, buf, n) */
    TEST_READ,     /* usock_read(s, buf, n) */
    TEST_READLINE, /* usock_readline(s, buf, n) */
    TEST_ACCEPT,   /* usock_accept(s, NULL) into `accepted` */
    TEST_CONNECT,  /* usock_connect(s, &addr) */
    TEST_SENDALL,  /* usock_sendall(s, out, n) */
    TEST_WRITE     /* usock_write(s, out, n) */
};

struct test_op {
    enum test_op_kind kind;
    usock_t *s;
    size_t n;              /* at most sizeof buf for reads */
    const void *out;       /* what the send kinds send */
    usock_addr_t addr;     /* where TEST_CONNECT connects */
    ssize_t rc;            /* the call's result (accept: 0 or -1) */
    int err;               /* errno after the call (0 on success) */
    usock_t *accepted;     /* TEST_ACCEPT's socket */
    double took;           /* seconds the call took */
    int done;              /* 1 once the call returned */
    char buf[256];         /* what the read kinds received */
};

/* Spawn a task that performs op (after op->done = 0).  Returns its id. */
int test_spawn_op(struct test_op *op);

/* Run the spawned tasks until op is done, for at most `limit` seconds;
 * fails the test when it is not done by then. */
void test_wait_op(struct test_op *op, double limit);

/* Run the suite with CK_ENV; EXIT_SUCCESS when every test passed, 77
 * (automake's SKIP) when every test was skipped. */
int test_main(Suite *s);

/* Skips: a case that cannot run here is not added to its tcase; instead
 * test_skip prints "SKIP: name: reason" and counts it, and test_main
 * reports the skips apart from the passes.  Decide while building the
 * suite, in the parent (test_can_unshare_net probes in a child). */
void test_skip(const char *name, const char *reason);
int test_can_unshare_net(void);

#endif /* USOCK_TESTS_HELPERS_H */
