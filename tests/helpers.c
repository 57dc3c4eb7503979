/*
 * Shared helpers of the Check suites (see helpers.h).
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#include <usocket.h>

#define USOCK_HELPERS_C 1
#include "base.h"
#include "helpers.h"

/* Check keeps the tcase name pointer: the names live here, never freed, so
 * valgrind sees no leak. */
#define MAX_TCASES 64
#define NAME_LEN 64
static char tcase_names[MAX_TCASES][NAME_LEN];
static int tcase_count;

/* Not static, so that the compiler cannot drop these write-only stores. */
#define MAX_TRACKED 16384
usock_t *test_tracked[MAX_TRACKED];
static int ntracked;

static pthread_mutex_t track_lock = PTHREAD_MUTEX_INITIALIZER;

/* See helpers.h. */
usock_t *test_track(usock_t *s)
{
    int e = errno;

    pthread_mutex_lock(&track_lock);
    if (s != NULL && ntracked < MAX_TRACKED) {
        test_tracked[ntracked++] = s;
    }
    pthread_mutex_unlock(&track_lock);
    errno = e;
    return s;
}

/* See helpers.h. */
int test_close(usock_t *s)
{
    pthread_mutex_lock(&track_lock);
    for (int i = ntracked; i-- > 0;) {
        if (test_tracked[i] == s) {
            test_tracked[i] = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&track_lock);
    return (usock_close)(s); /* the function, not the macro */
}

/* Close what the registry still holds (the teardown's clean-up). */
static void close_tracked(void)
{
    for (int i = 0; i < ntracked; i++) {
        if (test_tracked[i] != NULL) {
            usock_t *s = test_tracked[i];
            test_tracked[i] = NULL;
            (usock_close)(s);
        }
    }
    ntracked = 0;
}

/* ---- per-test accounting (see helpers.h) ---------------------------- */

/* Hidden counters of the library (tests link libusocket_core). */
long usock__live_sockets(void);
size_t usock__live_tasks(void);
const char *usock__reactor_name(void);

#define MAX_FDS 4096
static unsigned char fd_open_at_setup[MAX_FDS];
static long sockets_at_setup;

/* What fd points to ("socket:[123]", "anon_inode:[eventfd]" ...). */
static const char *fd_target(int fd, char *buf, size_t n)
{
    char path[64];
    ssize_t k;

    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    k = readlink(path, buf, n - 1);
    buf[k > 0 ? k : 0] = '\0';
    return buf;
}

/* Mark the open fds of the process in `open` (fd < MAX_FDS); the count. */
static int scan_fds(unsigned char *open)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0, self = d ? dirfd(d) : -1;

    memset(open, 0, MAX_FDS);
    while (d != NULL && (e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != self && fd < MAX_FDS) {
            open[fd] = 1;
            n++;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static size_t tasks_allowed;

/* See helpers.h. */
void test_allow_tasks(size_t n)
{
    tasks_allowed = n;
}

static void leak_setup(void)
{
    tasks_allowed = 0;
    scan_fds(fd_open_at_setup);
    sockets_at_setup = usock__live_sockets();
}

/* Fails the test when it leaves a task alive, a socket object unclosed or
 * an fd open that it did not find at setup.  This thread's own reactor
 * (epoll and eventfd), made during the test, may stay, and so may the
 * epoll set and eventfd behind usock_hub_fd(): at most four such fds. */
static void leak_teardown(void)
{
    static unsigned char now[MAX_FDS];
    char list[512] = "", t[128];
    int extra = 0, plumbing = 0;

    ck_assert_msg(usock__live_tasks() == tasks_allowed,
                  "leak: %zu task(s) still alive at the end of the test",
                  usock__live_tasks());
    close_tracked();
    ck_assert_msg(usock__live_sockets() == sockets_at_setup,
                  "leak: %ld socket object(s) not closed",
                  usock__live_sockets() - sockets_at_setup);
    scan_fds(now);
    for (int fd = 0; fd < MAX_FDS; fd++) {
        if (!now[fd] || fd_open_at_setup[fd]) {
            continue;
        }
        fd_target(fd, t, sizeof t);
        if (usock__reactor_name() != NULL &&
            (strcmp(t, "anon_inode:[eventpoll]") == 0 ||
             strcmp(t, "anon_inode:[eventfd]") == 0) &&
            plumbing < 4) {
            plumbing++;
            continue;
        }
        extra++;
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, " %d=%s", fd, t);
    }
    ck_assert_msg(extra == 0, "leak: %d fd(s) left open:%s", extra, list);
}

static void reactor_setup(const char *name)
{
    const char *in_use;

    setenv("USOCKET_REACTOR", name, 1);
    signal(SIGPIPE, SIG_DFL);
    /* Give this thread's hub the named reactor now, so that the test's
     * own blocking calls (not only its tasks') wait on it: a hub with no
     * reactor waits with a direct poll(2) whatever the name. */
    ck_assert_msg(usock_hub_self() != NULL, "no hub: %s", strerror(errno));
    in_use = usock__reactor_name();
    ck_assert_msg(in_use != NULL && strcmp(in_use, name) == 0,
                  "tcase for reactor %s runs on %s", name,
                  in_use ? in_use : "none");
    leak_setup();
}

static void setup_ev(void)
{
    reactor_setup("ev");
}

static void setup_poll(void)
{
    reactor_setup("poll");
}

#ifdef HAVE_EPOLL
static void setup_epoll(void)
{
    reactor_setup("epoll");
}
#endif

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
    tcase_add_checked_fixture(tc, setup, leak_teardown);
    add(tc);
    tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(s, tc);
}

/* See helpers.h. */
TCase *test_tcase_create(const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, leak_setup, leak_teardown);
    return tc;
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
#ifdef HAVE_EPOLL
    add_one(s, name, "epoll", setup_epoll, add, timeout_s);
#endif
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

/* See helpers.h.  valgrind preloads its own libraries into the program it
 * runs. */
int test_under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");

    return p != NULL && strstr(p, "vgpreload") != NULL;
}

/* See helpers.h. */
int test_sanitized(void)
{
#if defined(USOCK__ASAN) || defined(USOCK__TSAN)
    return 1;
#else
    return test_under_valgrind();
#endif
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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* See helpers.h. */
void test_assert_timing(const char *what, double t, double tol,
                        const double *el, int n)
{
    double sorted[64], med;
    char list[64 * 12] = "";
    size_t used = 0;

    ck_assert_msg(n > 0 && n <= 64, "%s: %d trials", what, n);
    for (int i = 0; i < n; i++) {
        sorted[i] = el[i];
        used += (size_t)snprintf(list + used, sizeof list - used, " %.6f",
                                 el[i]);
    }
    qsort(sorted, (size_t)n, sizeof sorted[0], cmp_double);
    med = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    if (getenv("USOCK_TEST_TIMING") != NULL) {
        fprintf(stderr, "timing %s %s(%.3f s): median %.4f s:%s\n",
                usock__reactor_name(), what, t, med, list);
    }
    ck_assert_msg(sorted[0] >= t - 1e-6,
                  "%s(%.3f s) returned early:%s", what, t, list);
    ck_assert_msg(sorted[n - 1] <= t + 0.3 * test_mult(),
                  "%s(%.3f s) hung past t + 0.3 s:%s", what, t, list);
    ck_assert_msg(med <= t + tol * test_mult(),
                  "%s(%.3f s): median %.4f s over t + %.3f s:%s", what, t,
                  med, tol * test_mult(), list);
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

static int nskipped;

/* See helpers.h. */
void test_skip(const char *name, const char *reason)
{
    fprintf(stderr, "SKIP: %s: %s\n", name, reason);
    nskipped++;
}

/* See helpers.h. */
int test_can_unshare_net(void)
{
    int status;
    pid_t pid = fork();

    if (pid == 0) {
        _exit(unshare(CLONE_NEWNET) == 0 ? 0 : 1);
    }
    return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0;
}

/* See helpers.h. */
int test_main(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed, ran;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    ran = srunner_ntests_run(sr);
    srunner_free(sr);
    if (nskipped > 0) {
        fprintf(stderr, "%d case(s) skipped (not counted as passed)\n",
                nskipped);
    }
    if (failed == 0 && ran == 0 && nskipped > 0) {
        return 77;
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
