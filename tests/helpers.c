/*
 * Shared helpers of the Check suites (see helpers.h).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <usocket.h>

#include "helpers.h"

/* Check keeps the tcase name pointer: the names live here, never freed, so
 * valgrind sees no leak. */
#define MAX_TCASES 64
#define NAME_LEN 64
static char tcase_names[MAX_TCASES][NAME_LEN];
static int tcase_count;

static void reactor_setup(const char *name)
{
    setenv("USOCKET_REACTOR", name, 1);
    signal(SIGPIPE, SIG_DFL);
}

static void setup_ev(void)
{
    reactor_setup("ev");
}

static void setup_poll(void)
{
    reactor_setup("poll");
}

static void add_one(Suite *s, const char *name, const char *reactor,
                    void (*setup)(void), void (*add)(TCase *tc),
                    int timeout_s)
{
    char *tcname;
    TCase *tc;

    /* Not ck_assert: no test is running yet. */
    if (tcase_count == MAX_TCASES) {
        fprintf(stderr, "helpers.c: more than %d tcases\n", MAX_TCASES);
        abort();
    }
    tcname = tcase_names[tcase_count++];
    snprintf(tcname, NAME_LEN, "%s:%s", name, reactor);
    tc = tcase_create(tcname);
    tcase_add_checked_fixture(tc, setup, NULL);
    add(tc);
    tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(s, tc);
}

/* Not static, so that the compiler cannot drop these write-only stores. */
#define MAX_TRACKED 16384
usock_t *test_tracked[MAX_TRACKED];
static int ntracked;

/* See helpers.h. */
usock_t *test_track(usock_t *s)
{
    int n = __atomic_fetch_add(&ntracked, 1, __ATOMIC_RELAXED);

    if (s != NULL && n < MAX_TRACKED) {
        test_tracked[n] = s;
    }
    return s;
}

/* See helpers.h. */
void add_reactor_tcases(Suite *s, const char *name, void (*add)(TCase *tc),
                        int timeout_s)
{
#ifdef HAVE_LIBEV
    add_one(s, name, "ev", setup_ev, add, timeout_s);
#else
    (void)setup_ev;
#endif
    add_one(s, name, "poll", setup_poll, add, timeout_s);
}

/* See helpers.h. */
const char *test_errname(int e)
{
    const char *name;

    if (e == 0) {
        return "0";
    }
    name = strerrorname_np(e);
    return name != NULL ? name : "?";
}

/* See helpers.h. */
double test_mult(void)
{
    const char *v = getenv("USOCK_TEST_TIMEOUT_MULTIPLIER");
    double m;

    if (v == NULL || *v == '\0') {
        return 1.0;
    }
    m = strtod(v, NULL);
    return m >= 1.0 ? m : 1.0;
}

/* See helpers.h. */
usock_t *test_listener_family(int family, usock_addr_t *bound)
{
    const char *ip = family == AF_INET6 ? "::1" : "127.0.0.1";
    usock_addr_t a;
    usock_t *s;

    s = ck_assert_nonnull(usock_socket(family, SOCK_STREAM, 0));
    ck_assert_ok(usock_addr_ip(&a, ip, 0));
    ck_assert_ok(usock_bind(s, &a));
    ck_assert_ok(usock_listen(s, 128));
    if (bound != NULL) {
        ck_assert_ok(usock_getsockname(s, bound));
        ck_assert_int_gt(usock_addr_port(bound), 0);
    }
    return s;
}

/* See helpers.h. */
usock_t *test_listener(usock_addr_t *bound)
{
    return test_listener_family(AF_INET, bound);
}

/* See helpers.h. */
int test_pair(usock_t **client, usock_t **server)
{
    usock_addr_t a;
    usock_t *l = test_listener(&a);
    usock_t *c = ck_assert_nonnull(usock_socket(AF_INET, SOCK_STREAM, 0));

    /* The kernel completes a loopback handshake before accept is called:
     * a plain bounded connect, then a bounded accept; no task needed. */
    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_ok(usock_connect(c, &a));
    ck_assert_ok(usock_settimeout(l, 5.0));
    *server = ck_assert_nonnull(usock_accept(l, NULL));
    ck_assert_ok(usock_settimeout(c, USOCK_NONE));
    ck_assert_ok(usock_settimeout(*server, USOCK_NONE));
    ck_assert_ok(usock_close(l));
    *client = c;
    return 0;
}

/* See helpers.h. */
int raise_nofile(rlim_t want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return -1;
    }
    if (rl.rlim_cur >= want) {
        return 0;
    }
    if (rl.rlim_max < want) {
        struct rlimit up = {want, want};

        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            return 0;
        }
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return -1;
    }
    return rl.rlim_cur >= want ? 0 : -1;
}

struct send_after {
    usock_t *s;
    double delay;
    size_t n;
    char buf[];
};

static void send_after_task(void *arg)
{
    struct send_after *sa = arg;

    if (usock_sleep(sa->delay) == 0) {
        if (sa->n == 0) {
            usock_shutdown(sa->s, SHUT_WR);
        } else {
            usock_sendall(sa->s, sa->buf, sa->n);
        }
    }
    free(sa);
}

/* See helpers.h. */
int test_send_after(usock_t *s, double delay, const void *buf, size_t n)
{
    struct send_after *sa = malloc(sizeof *sa + n);
    int id;

    ck_assert_ptr_nonnull(sa);
    sa->s = s;
    sa->delay = delay;
    sa->n = n;
    if (n > 0) {
        memcpy(sa->buf, buf, n);
    }
    id = usock_spawn(send_after_task, sa);
    ck_assert_int_gt(id, 0);
    return id;
}

static ssize_t do_op(struct test_op *op)
{
    switch (op->kind) {
    case TEST_RECV:
        return usock_recv(op->s, op->buf, op->n);
    case TEST_READ:
        return usock_read(op->s, op->buf, op->n);
    case TEST_READLINE:
        return usock_readline(op->s, op->buf, op->n);
    case TEST_ACCEPT:
        op->accepted = usock_accept(op->s, NULL);
        return op->accepted != NULL ? 0 : -1;
    case TEST_CONNECT:
        return usock_connect(op->s, &op->addr);
    case TEST_SENDALL:
        return usock_sendall(op->s, op->out, op->n);
    case TEST_WRITE:
        return usock_write(op->s, op->out, op->n);
    }
    errno = EINVAL;
    return -1;
}

static void op_task(void *arg)
{
    struct test_op *op = arg;
    double t0 = usock_now();

    errno = 0;
    op->rc = do_op(op);
    op->err = op->rc < 0 || (op->kind == TEST_WRITE && (size_t)op->rc < op->n)
                  ? errno
                  : 0;
    op->took = usock_now() - t0;
    op->done = 1;
}

/* See helpers.h. */
int test_spawn_op(struct test_op *op)
{
    int id;

    ck_assert(op->kind == TEST_SENDALL || op->kind == TEST_WRITE ||
              op->kind == TEST_ACCEPT || op->kind == TEST_CONNECT ||
              op->n <= sizeof op->buf);
    op->done = 0;
    op->rc = -2;
    op->err = 0;
    op->accepted = NULL;
    id = usock_spawn(op_task, op);
    ck_assert_int_gt(id, 0);
    return id;
}

/* See helpers.h. */
void test_wait_op(struct test_op *op, double limit)
{
    double end = usock_now() + limit * test_mult();

    while (!op->done && usock_now() < end) {
        usock_sleep(0.001);
    }
    ck_assert_msg(op->done, "the task's call did not return in %.3f s",
                  limit * test_mult());
}

/* See helpers.h. */
int test_main(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
