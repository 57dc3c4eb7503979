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
#include <netdb.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <linux/kcmp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"
#include "internal.h"

/* The reactor waits in an epoll set (ev, epoll), not in poll(2). */
static int on_epoll_set(void)
{
    const char *r = getenv("USOCKET_REACTOR");
    return r == NULL || strcmp(r, "ev") == 0 || strcmp(r, "epoll") == 0;
}

static void nothing(void *arg)
{
    (void)arg;
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
     * full (poll), a new fd number (ev) or its fd table to grow (epoll). */
    ck_assert_ok(raise_nofile(2 * MAX + 64));
    for (int i = 0; i < MAX; i++) {
        ck_assert_ok(test_pair(&a[i], &b[i]));
    }
    ck_assert_ptr_nonnull(usock_hub_self()); /* the reactor exists */
    ck_assert_ok(usock_sleep(0.001)); /* and the timer heap */
    const char *rn = usock__reactor_name();
    if (rn != NULL && strcmp(rn, "epoll") == 0) {
        /* epoll's fd table already covers every number the connects
         * watched: put b[0] above it, so its first watch grows it. */
        enum { HIGH = 4 * 1024 + 7 };
        ck_assert_ok(raise_nofile(HIGH + 64));
        ck_assert_int_eq(dup2(usock_fileno(b[0]), HIGH), HIGH);
        close(usock_fileno(b[0]));
        b[0]->fd = HIGH;
    }
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

/* Make the next reactor pass fail with EINVAL: for ev and epoll, put
 * /dev/null over the epoll fd (epoll_wait: EINVAL); for poll, a RLIMIT_NOFILE below the
 * number of fds watched (poll(2): EINVAL). */
static struct rlimit saved_nofile;

static void break_reactor(void)
{
    if (on_epoll_set()) {
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
        saved_nofile = rl;
        rl.rlim_cur = 1;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
}

/* Undo break_reactor's limit (LeakSanitizer needs fds at exit). */
static void mend_reactor(void)
{
    if (!on_epoll_set()) {
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
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
    mend_reactor();
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
    rl.rlim_cur = rl.rlim_max < 1024 ? rl.rlim_max : 1024;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
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

/* ---- pthread_setspecific failing: the hub is refused --------------------- */

/*
 * glibc keeps the values of keys 32 and up in second-level blocks of 32
 * entries of 16 bytes, allocated by pthread_setspecific with calloc on a
 * thread's first value there: that calloc failing is its ENOMEM.  The
 * program's own calloc replaces libc's (glibc allows it), failing that one
 * call on demand.  Not under sanitizers, whose calloc it would replace.
 */
#ifdef USOCK__ASAN
static const int fault_asan = 1;
#else
static const int fault_asan = 0;
#endif
#if !defined(USOCK__ASAN) && !defined(USOCK__TSAN)
#define FAULT_CALLOC 1
void *__libc_calloc(size_t n, size_t size);
static volatile int fail_key_block;

__attribute__((visibility("default"))) void *calloc(size_t n, size_t size)
{
    if (fail_key_block && n == 32 && size == 2 * sizeof(void *)) {
        fail_key_block = 0;
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(n, size);
}

/* On a new thread, whose second-level blocks are all still unallocated
 * (the main thread's may not be: keys made and deleted before). */
static void *setspecific_thread(void *arg)
{
    int *res = arg;

    fail_key_block = 1;
    res[0] = usock_spawn(nothing, NULL);
    res[1] = errno;
    res[2] = fail_key_block;
    res[3] = usock__tls_hub != NULL;
    res[4] = usock_spawn(nothing, NULL); /* memory is back */
    res[5] = usock_hub_self() != NULL;
    res[6] = usock_run();
    return NULL;
}

START_TEST(setspecific_enomem)
{
    pthread_key_t k;
    pthread_t th;
    int res[7] = {0};

    /* The hub's key comes after these: 40 or higher. */
    for (int i = 0; i < 40; i++) {
        ck_assert_int_eq(pthread_key_create(&k, NULL), 0);
    }
    ck_assert_int_eq(pthread_create(&th, NULL, setspecific_thread, res), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(res[2] == 0, "pthread_setspecific never asked for its "
                               "block: the hub's key is below 32");
    ck_assert_msg(res[0] == -1 && res[1] == ENOMEM,
                  "spawn with pthread_setspecific failing: %d %s", res[0],
                  test_errname(res[1]));
    ck_assert_int_eq(res[3], 0); /* no hub made without its clean-up */
    ck_assert_int_gt(res[4], 0);
    ck_assert_int_eq(res[5], 1);
    ck_assert_int_eq(res[6], 0);
}
END_TEST
#endif

/* ---- libev's allocations go through a non-aborting allocator ------------ */

#ifdef HAVE_LIBEV
static void ev_only_setup(void)
{
    setenv("USOCKET_REACTOR", "ev", 1); /* not the default on Linux */
}

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
#endif

/* ---- join and cancel across hubs: EXDEV -------------------------------- */

struct other {
    int live, done, main_id;        /* ids of the other thread's hub */
    int go;                          /* 1: the other thread may finish */
};

static void other_sleeper(void *arg)
{
    struct other *o = arg;

    while (!__atomic_load_n(&o->go, __ATOMIC_ACQUIRE)) {
        usock_sleep(0.005);
    }
}

static void *other_thread(void *arg)
{
    struct other *o = arg;

    o->done = usock_spawn(nothing, NULL);
    o->live = usock_spawn(other_sleeper, o);
    o->main_id = usock_self();
    usock_sleep(0.01); /* `done` finishes */
    __atomic_store_n(&o->go, 2, __ATOMIC_RELEASE);
    while (__atomic_load_n(&o->go, __ATOMIC_ACQUIRE) == 2) {
        usock_sleep(0.005);
    }
    usock_run();
    return NULL;
}

/* Every id of the other hub is EXDEV here, whatever the timeout. */
static void check_exdev(const struct other *o)
{
    const int ids[3] = {o->live, o->done, o->main_id};

    for (int i = 0; i < 3; i++) {
        ck_assert_errno(usock_join(ids[i], 0), EXDEV);
        ck_assert_errno(usock_join(ids[i], 0.05), EXDEV);
        ck_assert_errno(usock_join(ids[i], USOCK_NONE), EXDEV);
        ck_assert_errno(usock_cancel(ids[i]), EXDEV);
    }
    ck_assert_errno(usock_join(INT_MAX, USOCK_NONE), ESRCH);
    ck_assert_errno(usock_cancel(INT_MAX), ESRCH);
}

static void exdev_task(void *arg)
{
    check_exdev(arg);
}

static void *fresh_thread(void *arg)
{
    /* A thread that never used usocket: its first call is the join. */
    check_exdev(arg);
    return NULL;
}

START_TEST(join_cancel_exdev)
{
    struct other o = {0};
    pthread_t th, fresh;

    ck_assert_int_eq(pthread_create(&th, NULL, other_thread, &o), 0);
    while (__atomic_load_n(&o.go, __ATOMIC_ACQUIRE) != 2) {
        usleep(1000);
    }
    ck_assert_int_gt(o.live, 0);
    ck_assert_int_gt(o.done, 0);
    check_exdev(&o); /* from this thread's own context */
    int t = usock_spawn(exdev_task, &o);
    ck_assert_int_gt(t, 0);
    ck_assert_ok(usock_join(t, 5.0)); /* from a task */
    ck_assert_int_eq(pthread_create(&fresh, NULL, fresh_thread, &o), 0);
    ck_assert_int_eq(pthread_join(fresh, NULL), 0);
    __atomic_store_n(&o.go, 3, __ATOMIC_RELEASE);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    /* Ours still work: a finished task of this hub is 0. */
    ck_assert_ok(usock_join(t, 0));
    ck_assert_ok(usock_cancel(t));
}
END_TEST

/* ---- thread exit with blocked tasks: they unwind before the hub goes ---- */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n - 1; /* opendir's own fd */
}

struct blocked {
    usock_t *s;
    ssize_t rc;
    int err, closed;
};

static void blocked_task(void *arg)
{
    struct blocked *bl = arg;
    char c;

    errno = 0;
    bl->rc = usock_recv(bl->s, &c, 1);
    bl->err = errno;
    bl->closed = usock_close(bl->s) == 0;
}

static void *exiting_thread(void *arg)
{
    struct blocked *bl = arg;

    for (int i = 0; i < 3; i++) {
        usock_spawn(blocked_task, &bl[i]);
    }
    usock_sleep(0.02); /* all three block in recv */
    return NULL;      /* exits with the tasks blocked: no usock_run */
}

START_TEST(thread_exit_unwinds)
{
    struct blocked bl[3] = {{0}};
    usock_t *peer[3];
    pthread_t th;

    for (int i = 0; i < 3; i++) {
        ck_assert_ok(test_pair(&bl[i].s, &peer[i]));
        bl[i].rc = -2;
    }
    int before = count_fds();
    ck_assert_int_eq(pthread_create(&th, NULL, exiting_thread, bl), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(bl[i].rc == -1, "task %d: recv returned %zd", i,
                      bl[i].rc);
        ck_assert_str_eq(test_errname(bl[i].err), "ECANCELED");
        ck_assert(bl[i].closed);
    }
    /* The three sockets the tasks closed, and nothing of the hub's. */
    ck_assert_int_eq(count_fds(), before - 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_ok(usock_close(peer[i]));
    }
}
END_TEST

/* ---- AF_UNIX connect to a full backlog waits out its timeout ----------- */

struct late_accept {
    usock_t *l;
    usock_t *got;
};

static void late_accept_task(void *arg)
{
    struct late_accept *la = arg;

    usock_sleep(0.1);
    la->got = usock_accept(la->l, NULL);
}

START_TEST(unix_connect_full_backlog)
{
    usock_addr_t a;
    char name[64];
    usock_t *l = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));
    usock_t *c[16];
    int n = 0;

    snprintf(name, sizeof name, "@usock-fault-%d", (int)getpid());
    ck_assert_ok(usock_addr_unix(&a, name));
    ck_assert_ok(usock_bind(l, &a));
    ck_assert_ok(usock_listen(l, 0));
    /* Fill the backlog: connects with timeout 0 until one is EAGAIN. */
    for (;;) {
        ck_assert_int_lt(n, 16);
        c[n] = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));
        ck_assert_ok(usock_settimeout(c[n], 0));
        if (usock_connect(c[n], &a) < 0) {
            ck_assert_str_eq(test_errname(errno), "EAGAIN");
            break;
        }
        n++;
    }
    ck_assert_int_gt(n, 0);
    /* c[n] is the one refused: now with timeouts. */
    ck_assert_ok(usock_settimeout(c[n], 0.3));
    double t0 = usock_now();
    ck_assert_errno(usock_connect(c[n], &a), ETIMEDOUT);
    ck_assert_duration(t0, 0.3, 0.3);
    /* Room comes 0.1 s later: the connect gets in then. */
    struct late_accept la = {.l = l};
    ck_assert_int_gt(usock_spawn(late_accept_task, &la), 0);
    ck_assert_ok(usock_settimeout(c[n], 5.0));
    t0 = usock_now();
    ck_assert_ok(usock_connect(c[n], &a));
    ck_assert_duration(t0, 0.09, 0.5);
    ck_assert_ok(usock_run());
    ck_assert_ptr_nonnull(la.got);
    ck_assert_ok(usock_close(la.got));
    for (int i = 0; i <= n; i++) {
        ck_assert_ok(usock_close(c[i]));
    }
    ck_assert_ok(usock_close(l));
}
END_TEST

/* ---- fork: parent and child both keep working (F14) -------------------- */

/* The fds of this process that are reactor plumbing (epoll, eventfd). */
static int reactor_fds(int *fds, int max)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    while (d != NULL && (e = readdir(d)) != NULL && n < max) {
        char path[300], target[64];
        ssize_t k;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        k = readlink(path, target, sizeof target - 1);
        if (k > 0) {
            target[k] = '\0';
            if (strcmp(target, "anon_inode:[eventpoll]") == 0 ||
                strcmp(target, "anon_inode:[eventfd]") == 0) {
                fds[n++] = atoi(e->d_name);
            }
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void child_echo(void *arg)
{
    usock_t **p = arg;
    char buf[8] = {0};

    if (usock_sendall(p[1], "ping", 4) == 0 && usock_sleep(0.02) == 0 &&
        usock_read(p[0], buf, 4) == 4 && memcmp(buf, "ping", 4) == 0) {
        p[2] = p[0]; /* success marker */
    }
}

/* In the child: usocket works at once, with a reactor of its own (no fd of
 * it is the same open file as one of the parent's).  Exit status: 0 ok,
 * 2 usocket failed, 3 a reactor fd is the parent's, 4 kcmp unusable. */
static int fork_child_checks(const int *pfds, int np, usock_t *x)
{
    usock_t *p[3] = {0};
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        return 2;
    }
    close(sv[0]);
    close(sv[1]);
    usock_t *l = usock_socket(AF_INET, SOCK_STREAM, 0);
    usock_addr_t a;
    if (!l || usock_addr_ip(&a, "127.0.0.1", 0) || usock_bind(l, &a) ||
        usock_listen(l, 8) || usock_getsockname(l, &a)) {
        return 2;
    }
    p[0] = usock_socket(AF_INET, SOCK_STREAM, 0);
    if (!p[0] || usock_connect(p[0], &a) || !(p[1] = usock_accept(l, NULL))) {
        return 2;
    }
    if (usock_spawn(child_echo, p) <= 0 || usock_run() != 0 || !p[2]) {
        return 2;
    }
    /* The inherited socket the parent's task waits on: closing our copy
     * must not disturb the parent. */
    if (usock_close(x) != 0) {
        return 2;
    }
    int cfds[16], nc = reactor_fds(cfds, 16);
    if (nc == 0) {
        return 2;
    }
    for (int i = 0; i < nc; i++) {
        for (int j = 0; j < np; j++) {
            long r = syscall(SYS_kcmp, getppid(), getpid(), KCMP_FILE,
                             pfds[j], cfds[i]);
            if (r < 0) {
                return 4;
            }
            if (r == 0) {
                return 3;
            }
        }
    }
    return 0;
}

static void post_flag(void *arg)
{
    __atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
}

static void *post_from_thread(void *arg)
{
    void **v = arg;
    usock_hub_post(v[0], post_flag, v[1]);
    return NULL;
}

START_TEST(fork_both_work)
{
    usock_t *x, *xp;
    struct test_op op = {.kind = TEST_RECV, .n = 1};
    usock_hub_t *h = usock_hub_self();
    int pfds[16], np, status = -1, posted = 0;

    ck_assert_ptr_nonnull(h);
    ck_assert_ok(test_pair(&x, &xp));
    op.s = x;
    test_spawn_op(&op);
    ck_assert_ok(usock_sleep(0.02)); /* the recv waits in the reactor */
    np = reactor_fds(pfds, 16);
    ck_assert_int_gt(np, 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        _exit(fork_child_checks(pfds, np, x));
    }
    /* The parent keeps working while the child runs. */
    double end = usock_now() + 10.0 * test_mult();
    while (waitpid(pid, &status, WNOHANG) == 0 && usock_now() < end) {
        ck_assert_ok(usock_sleep(0.01));
    }
    ck_assert_msg(WIFEXITED(status), "child did not exit (status %d)",
                  status);
    if (WEXITSTATUS(status) == 4) {
        fprintf(stderr, "fork_both_work: kcmp(2) not permitted here: the "
                        "child's reactor fds were not compared\n");
    } else {
        ck_assert_msg(WEXITSTATUS(status) == 0,
                      "child failed: %d (2 usocket, 3 the parent's "
                      "reactor fd)", WEXITSTATUS(status));
    }
    ck_assert(!op.done);
    ck_assert_count(usock_send(xp, "z", 1), 1);
    test_wait_op(&op, 2.0);
    ck_assert_int_eq(op.rc, 1);
    /* A post from another thread still wakes the parent's hub. */
    pthread_t th;
    void *v[2] = {h, &posted};
    ck_assert_int_eq(pthread_create(&th, NULL, post_from_thread, v), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    for (int i = 0; i < 200 && !__atomic_load_n(&posted, __ATOMIC_ACQUIRE);
         i++) {
        ck_assert_ok(usock_sleep(0.01));
    }
    ck_assert(posted);
}
END_TEST

/* ---- fork while other threads post: the fork corner (F14) ------------- */


#define FORK_POSTERS 2

struct fork_posts {
    usock_hub_t *h;
    long posted, ran, failed; /* atomic */
    int stop;                 /* atomic: the posters stop */
    int hub_stop;             /* atomic: post_hub_thread stops */
};

static void count_post(void *arg)
{
    struct fork_posts *fp = arg;

    __atomic_add_fetch(&fp->ran, 1, __ATOMIC_RELAXED);
}

/* Post to fp->h in a tight loop until told to stop, with at most 1,000
 * posts in flight, so that the inbox stays bounded. */
static void *tight_poster(void *arg)
{
    struct fork_posts *fp = arg;

    while (!__atomic_load_n(&fp->stop, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&fp->posted, __ATOMIC_RELAXED) -
                __atomic_load_n(&fp->ran, __ATOMIC_RELAXED) >
            1000) {
            sched_yield();
            continue;
        }
        if (usock_hub_post(fp->h, count_post, fp) == 0) {
            __atomic_add_fetch(&fp->posted, 1, __ATOMIC_RELAXED);
        } else {
            __atomic_add_fetch(&fp->failed, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

struct echo_back {
    usock_t *s;
    int ok;
};

static void echo_back_task(void *arg)
{
    struct echo_back *e = arg;
    char b[4];

    if (usock_read(e->s, b, 4) == 4 && usock_sendall(e->s, b, 4) == 0) {
        e->ok = 1;
    }
}

/* In a forked child, at once: a task echoes over a loopback pair, then a
 * sleep.  0, or the step that failed.  Nothing is closed: the child
 * _exits.  (The registry of helpers.c is left out: the functions.) */
static int child_uses_usocket(void)
{
    usock_addr_t a;
    usock_t *l = (usock_socket)(AF_INET, SOCK_STREAM, 0), *c, *s;
    struct echo_back e = {0};
    char buf[4];
    int id;

    if (!l || usock_addr_ip(&a, "127.0.0.1", 0) || usock_bind(l, &a) ||
        usock_listen(l, 1) || usock_getsockname(l, &a)) {
        return 2;
    }
    c = (usock_socket)(AF_INET, SOCK_STREAM, 0);
    if (!c || usock_settimeout(c, 2.0) || usock_connect(c, &a) ||
        usock_settimeout(l, 2.0)) {
        return 3;
    }
    if (!(s = (usock_accept)(l, NULL)) || usock_settimeout(s, 2.0)) {
        return 4;
    }
    e.s = s;
    if ((id = usock_spawn(echo_back_task, &e)) <= 0) {
        return 5;
    }
    if (usock_sendall(c, "ping", 4) || usock_read(c, buf, 4) != 4 ||
        memcmp(buf, "ping", 4) != 0) {
        return 6;
    }
    if (usock_join(id, 2.0) != 0 || !e.ok) {
        return 7;
    }
    if (usock_sleep(0.001) != 0) {
        return 8;
    }
    return 0;
}

/* Wait for child pid for at most limit s while this thread's hub keeps
 * running (posts, tasks); a child still there then is killed.  1 when it
 * hung, else 0 with its status in *status. */
static int reap(pid_t pid, double limit, int *status)
{
    double end = usock_now() + limit * test_mult();
    pid_t w;

    while ((w = waitpid(pid, status, WNOHANG)) == 0 && usock_now() < end) {
        ck_assert_ok(usock_sleep(0.001));
    }
    if (w == 0) {
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, status, 0), pid);
        return 1;
    }
    ck_assert_int_eq(w, pid);
    return 0;
}

/* How many forks a fork test makes: fewer under valgrind, and under
 * ThreadSanitizer, whose fork copies the page tables of its shadow memory
 * (about 0.3 s of system time each on this machine). */
static int fork_rounds(void)
{
    return test_under_valgrind() || getenv("USOCK_TEST_TSAN") != NULL ? 40 : 200;
}

/* fork_prepare takes the id table's lock and this hub's inbox lock, so a
 * fork cannot catch a poster inside them: every child works at once, and
 * the parent loses no post. */
START_TEST(fork_while_posted)
{
    static struct fork_posts fp;
    pthread_t th[FORK_POSTERS];
    int forks = fork_rounds(), hung = 0, bad = 0, last = 0;

    memset(&fp, 0, sizeof fp);
    fp.h = ck_assert_nonnull(usock_hub_self());
    for (int i = 0; i < FORK_POSTERS; i++) {
        ck_assert_int_eq(pthread_create(&th[i], NULL, tight_poster, &fp), 0);
    }
    for (int i = 0; i < forks; i++) {
        int status = 0;
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            _exit(child_uses_usocket());
        }
        if (reap(pid, 5.0, &status)) {
            hung++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            bad++;
            last = status;
        }
    }
    __atomic_store_n(&fp.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < FORK_POSTERS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    }
    double end = usock_now() + 5.0 * test_mult();
    while (__atomic_load_n(&fp.ran, __ATOMIC_RELAXED) < fp.posted &&
           usock_now() < end) {
        ck_assert_ok(usock_sleep(0.001));
    }
    ck_assert_msg(hung == 0 && bad == 0,
                  "of %d children %d hung, %d failed (last status %#x: "
                  "exit %d is the step of child_uses_usocket)",
                  forks, hung, bad, last,
                  WIFEXITED(last) ? WEXITSTATUS(last) : -1);
    ck_assert_int_eq(fp.failed, 0);
    ck_assert_msg(fp.posted > forks, "only %ld posts during %d forks",
                  fp.posted, forks);
    ck_assert_int_eq(__atomic_load_n(&fp.ran, __ATOMIC_RELAXED), fp.posted);
}
END_TEST

/* Another thread's hub, running posts until told to stop, then the posts
 * still due (at most 5 s). */
static void *post_hub_thread(void *arg)
{
    struct fork_posts *fp = arg;

    __atomic_store_n(&fp->h, usock_hub_self(), __ATOMIC_RELEASE);
    if (fp->h == NULL) {
        return NULL;
    }
    while (!__atomic_load_n(&fp->hub_stop, __ATOMIC_ACQUIRE)) {
        usock_sleep(0.005);
    }
    double end = usock_now() + 5.0 * test_mult();
    while (__atomic_load_n(&fp->ran, __ATOMIC_RELAXED) <
               __atomic_load_n(&fp->posted, __ATOMIC_RELAXED) &&
           usock_now() < end) {
        usock_sleep(0.001);
    }
    return NULL;
}

/* In the child, a post to a hub whose thread exists only in the parent.
 * The post cannot run (that thread is not in the child), so it must fail,
 * with ESHUTDOWN as for a thread that has exited (DESIGN: "a post that
 * returned 0 runs"); and it must not block on the hub's inbox lock, which
 * the fork may have caught held by a poster of the parent.  Exit status:
 * 0 ESHUTDOWN, 5 accepted (it never runs), 6 another errno. */
static int child_posts_to(usock_hub_t *h)
{
    errno = 0;
    if (usock_hub_post(h, nothing, NULL) == 0) {
        return 5;
    }
    return errno == ESHUTDOWN ? 0 : 6;
}

/* The other side of the fork corner: thread C's hub is mid-post (threads
 * post to it in a tight loop) when the main thread forks; each child posts
 * to C's hub. */
START_TEST(fork_post_other_hub)
{
    static struct fork_posts fp;
    pthread_t hub_th, th[FORK_POSTERS];
    int forks = fork_rounds(), hung = 0, accepted = 0,
        other = 0, status = 0;

    memset(&fp, 0, sizeof fp);
    ck_assert_int_eq(pthread_create(&hub_th, NULL, post_hub_thread, &fp), 0);
    for (int i = 0; i < 500 && !__atomic_load_n(&fp.h, __ATOMIC_ACQUIRE);
         i++) {
        ck_assert_ok(usock_sleep(0.01));
    }
    ck_assert_ptr_nonnull(fp.h);
    for (int i = 0; i < FORK_POSTERS; i++) {
        ck_assert_int_eq(pthread_create(&th[i], NULL, tight_poster, &fp), 0);
    }
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            _exit(child_posts_to(fp.h));
        }
        if (reap(pid, 2.0, &status)) {
            hung++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 5) {
            accepted++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            other++;
        }
    }
    /* Posters first, then the hub's thread runs what they posted. */
    __atomic_store_n(&fp.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < FORK_POSTERS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    }
    __atomic_store_n(&fp.hub_stop, 1, __ATOMIC_RELEASE);
    ck_assert_int_eq(pthread_join(hub_th, NULL), 0);
    ck_assert_msg(hung == 0 && accepted == 0 && other == 0,
                  "of %d children posting to another thread's hub: %d hung "
                  "(deadlocked on its lock), %d had the post accepted "
                  "(it never runs), %d failed otherwise",
                  forks, hung, accepted, other);
    ck_assert_int_eq(fp.failed, 0);
    ck_assert_int_eq(__atomic_load_n(&fp.ran, __ATOMIC_RELAXED), fp.posted);
}
END_TEST

/* ---- the task cap: spawn beyond it is EAGAIN, posts wait --------------- */

static void short_nap(void *arg)
{
    (void)arg;
    usock_sleep(0.05);
}

START_TEST(max_tasks)
{
    usock_hub_t *h = usock_hub_self();
    int ran = 0;

    ck_assert_ptr_nonnull(h);
    ck_assert_uint_eq(usock_setmaxtasks(3), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_gt(usock_spawn(short_nap, NULL), 0);
    }
    ck_assert_errno(usock_spawn(short_nap, NULL), EAGAIN);
    /* A post at the cap is kept until a task has finished. */
    ck_assert_ok(usock_hub_post(h, set_flag, &ran));
    ck_assert_ok(usock_sleep(0.01));
    ck_assert(!ran);
    ck_assert_ok(usock_run());
    ck_assert(ran);
    ck_assert_int_gt(usock_spawn(short_nap, NULL), 0);
    ck_assert_uint_eq(usock_setmaxtasks(0), 3);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_gt(usock_spawn(short_nap, NULL), 0);
    }
    ck_assert_ok(usock_run());
}
END_TEST

/* ---- name lookups: a bounded pool of workers, the rest queued ---------- */

extern void (*usock__resolve_hook)(const char *host);
static int in_lookup, most_in_lookup;

static void counting_hook(const char *host)
{
    (void)host;
    int n = __atomic_add_fetch(&in_lookup, 1, __ATOMIC_SEQ_CST);
    int m = __atomic_load_n(&most_in_lookup, __ATOMIC_SEQ_CST);
    while (n > m && !__atomic_compare_exchange_n(&most_in_lookup, &m, n, 0,
                                                 __ATOMIC_SEQ_CST,
                                                 __ATOMIC_SEQ_CST)) {
    }
    struct timespec ts = {0, 200000000};
    nanosleep(&ts, NULL);
    __atomic_sub_fetch(&in_lookup, 1, __ATOMIC_SEQ_CST);
}

struct lookup {
    int rc, done;
};

static void lookup_task(void *arg)
{
    struct lookup *l = arg;
    usock_addrinfo_t *res = NULL;

    l->rc = usock_getaddrinfo("localhost", 80, AF_INET, SOCK_STREAM, 0, &res);
    usock_freeaddrinfo(res);
    l->done = 1;
}

START_TEST(resolver_pool_bounded)
{
    enum { N = 48 };
    static struct lookup l[N];

    __atomic_store_n(&usock__resolve_hook, counting_hook, __ATOMIC_RELEASE);
    for (int i = 0; i < N; i++) {
        ck_assert_int_gt(usock_spawn(lookup_task, &l[i]), 0);
    }
    ck_assert_ok(usock_run());
    __atomic_store_n(&usock__resolve_hook, NULL, __ATOMIC_RELEASE);
    for (int i = 0; i < N; i++) {
        ck_assert(l[i].done);
        ck_assert_int_eq(l[i].rc, 0);
    }
    ck_assert_msg(most_in_lookup <= 16, "%d lookups ran at once",
                  most_in_lookup);
    ck_assert_int_gt(most_in_lookup, 1);
}
END_TEST

/* ---- the read buffer has a fixed bound (S01, S04) ---------------------- */

#define RB_BOUND 65536

START_TEST(readline_bounded)
{
    enum { TOTAL = 200000 };
    static char out[TOTAL], in[1 << 20];
    usock_t *a, *b;
    size_t got = 0;

    memset(out, 'a', sizeof out);
    ck_assert_ok(test_pair(&a, &b));
    test_send_after(b, 0.0, out, TOTAL);
    test_send_after(b, 0.05, NULL, 0); /* then end of stream */
    /* No newline in 200 kB: each call returns a full piece of the bound
     * (n - 1 is larger), the socket's own buffer never holds more. */
    for (;;) {
        ssize_t r = usock_readline(a, in, sizeof in);
        ck_assert_int_ge(r, 0);
        ck_assert_msg(a->rb.cap <= RB_BOUND, "read buffer of %zu bytes",
                      a->rb.cap);
        if (r == 0) {
            break;
        }
        ck_assert_ptr_null(memchr(in, '\n', (size_t)r));
        ck_assert_int_eq((size_t)r, TOTAL - got < RB_BOUND ? TOTAL - got
                                                           : RB_BOUND);
        got += (size_t)r;
    }
    ck_assert_uint_eq(got, TOTAL);
    /* A buffer smaller than the bound still gets n - 1 bytes. */
    ck_assert_ok(usock_run());
}
END_TEST

START_TEST(read_failure_bounded)
{
    enum { SENT = 100000 };
    static char out[SENT], in[2 * SENT];
    usock_t *a, *b;

    memset(out, 'b', sizeof out);
    ck_assert_ok(test_pair(&a, &b));
    test_send_after(b, 0.0, out, SENT);
    ck_assert_ok(usock_settimeout(a, 0.3));
    /* More than the bound arrived, then the timeout: a short count with
     * errno set, nothing kept in (or lost from) the socket's buffer. */
    errno = 0;
    ck_assert_int_eq(usock_read(a, in, sizeof in), SENT);
    ck_assert_str_eq(test_errname(errno), "ETIMEDOUT");
    ck_assert_uint_le(a->rb.cap, RB_BOUND);
    ck_assert_uint_eq(a->rb.len, 0);
    /* Less than the bound: -1, and the bytes stay for the next call. */
    ck_assert_count(usock_send(b, "xyz", 3), 3);
    ck_assert_errno(usock_read(a, in, 10), ETIMEDOUT);
    ck_assert_count(usock_recv(a, in, 10), 3);
    ck_assert_int_eq(memcmp(in, "xyz", 3), 0);
    ck_assert_ok(usock_run());
}
END_TEST

/* ---- close of a socket last used on another thread's hub --------------- */

struct remote {
    usock_t *s;
    ssize_t rc;
    int err, done, fds_after;
};

static void remote_recv(void *arg)
{
    struct remote *rm = arg;
    char c;

    errno = 0;
    rm->rc = usock_recv(rm->s, &c, 1);
    rm->err = errno;
    __atomic_store_n(&rm->done, 1, __ATOMIC_RELEASE);
}

static void *remote_thread(void *arg)
{
    struct remote *rm = arg;

    usock_spawn(remote_recv, rm);
    usock_run();
    return NULL;
}

START_TEST(close_from_other_thread)
{
    struct remote rm = {.rc = -2};
    usock_t *peer;
    pthread_t th;

    ck_assert_ok(test_pair(&rm.s, &peer));
    int fd = usock_fileno(rm.s);
    ck_assert_int_eq(pthread_create(&th, NULL, remote_thread, &rm), 0);
    /* Wait until the other thread's task waits in recv: its hub then owns
     * the socket's watcher (a sleep is not enough under valgrind). */
    usock_hub_t *mine = usock_hub_self(); /* a's connect waited here */
    for (int i = 0; i < 5000; i++) {
        struct usock_hub *o = __atomic_load_n(&rm.s->hub, __ATOMIC_ACQUIRE);
        if (o != NULL && o != mine) {
            break;
        }
        usleep(1000);
    }
    ck_assert_ptr_ne(__atomic_load_n(&rm.s->hub, __ATOMIC_ACQUIRE), mine);
    usleep(20000);
    ck_assert(!__atomic_load_n(&rm.done, __ATOMIC_ACQUIRE));
    ck_assert_ok(usock_close(rm.s));
    /* That hub wakes its waiter (EBADF), retires the watcher, closes. */
    for (int i = 0; i < 200 && !__atomic_load_n(&rm.done, __ATOMIC_ACQUIRE);
         i++) {
        usleep(10000);
    }
    ck_assert_msg(rm.done, "the waiter on the other hub never woke");
    ck_assert_int_eq(rm.rc, -1);
    ck_assert_str_eq(test_errname(rm.err), "EBADF");
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    /* The fd is closed, and its number free for reuse. */
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
    ck_assert_ok(usock_close(peer));
}
END_TEST

/* ---- the fixture itself: it catches leaks, and names the reactor ------- */

static void forever(void *arg)
{
    (void)arg;
    usock_sleep(3600);
}

START_TEST(leaks_an_fd)
{
    ck_assert_int_ge(dup(0), 0);
}
END_TEST

START_TEST(leaks_a_task)
{
    ck_assert_int_gt(usock_spawn(forever, NULL), 0);
    ck_assert_ok(usock_sleep(0.01));
}
END_TEST

usock_t *fault_kept; /* not static: the store must not be dropped */

START_TEST(leaks_a_socket)
{
    /* (usock_socket): not through the test registry, so not cleaned up;
     * kept reachable, so that valgrind does not report it too. */
    fault_kept = (usock_socket)(AF_INET, SOCK_STREAM, 0);
    ck_assert_ptr_nonnull(fault_kept);
}
END_TEST

START_TEST(names_its_reactor)
{
    const char *want = getenv("USOCKET_REACTOR");
    ck_assert_ptr_nonnull(usock__reactor_name());
    ck_assert_str_eq(usock__reactor_name(), want);
}
END_TEST

static void add_leaky(TCase *tc)
{
    tcase_add_test(tc, leaks_an_fd);
    tcase_add_test(tc, leaks_a_task);
    tcase_add_test(tc, leaks_a_socket);
    tcase_add_test(tc, names_its_reactor);
}

START_TEST(fixture_catches_leaks)
{
    Suite *s = suite_create("leaky");
    add_reactor_tcases(s, "leaky", add_leaky, 10);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    unsetenv("CK_RUN_CASE"); /* this process's own selection */
    unsetenv("CK_RUN_SUITE");
    unsetenv("CK_INCLUDE_TAGS");
    srunner_run_all(sr, CK_SILENT);
    TestResult **r = srunner_results(sr);
    int n = srunner_ntests_run(sr), failed = 0, named = 0;
    for (int i = 0; i < n; i++) {
        const char *name = tr_tcname(r[i]);
        const char *msg = tr_msg(r[i]);
        if (tr_rtype(r[i]) == CK_PASS) {
            named++;
            continue;
        }
        ck_assert_msg(strstr(msg, "leak: ") != NULL, "%s: %s", name, msg);
        failed++;
    }
    int reactors = 1;
#ifdef HAVE_LIBEV
    reactors++;
#endif
#ifdef HAVE_EPOLL
    reactors++;
#endif
    ck_assert_int_eq(n, 4 * reactors);
    ck_assert_int_eq(failed, 3 * reactors);
    ck_assert_int_eq(named, reactors);
    free(r);
    srunner_free(sr);
}
END_TEST

/* ---- F15: fail the Nth allocation of an operation, for every N -------- */

struct sweep_ctx {
    usock_t *l;   /* a listener on a.  */
    usock_addr_t a;
    int ran;      /* set by sweep_task */
};

/* Disarm the hook; 1 when it injected its failure (nothing was left). */
static int disarm(void)
{
    long left = usock__alloc_fail_left();

    usock__alloc_fail_in(0);
    return left == 0;
}

/* Accept what is queued on x->l (timeout 0), closing it. */
static void drain_listener(struct sweep_ctx *x)
{
    usock_t *got;

    ck_assert_ok(usock_settimeout(x->l, 0));
    while ((got = usock_accept(x->l, NULL)) != NULL) {
        ck_assert_ok(usock_close(got));
    }
    ck_assert_str_eq(test_errname(errno), "EAGAIN");
}

/* Each try_* runs its operation with the n-th allocation from the start of
 * the operation failing (0: none), asserts the outcome (success, or -1 /
 * NULL with ENOMEM and nothing lost), cleans up and returns whether the
 * failure was injected. */
static int try_socket(struct sweep_ctx *x, long n)
{
    usock_t *s;
    int err, hit;

    (void)x;
    usock__alloc_fail_in(n);
    errno = 0;
    s = usock_socket(AF_INET, SOCK_STREAM, 0);
    err = errno;
    hit = disarm();
    if (s == NULL) {
        ck_assert_str_eq(test_errname(err), "ENOMEM");
        return hit;
    }
    ck_assert_ok(usock_settimeout(s, 5.0));
    ck_assert_ok(usock_connect(s, &x->a));
    ck_assert_ok(usock_close(s));
    drain_listener(x);
    return hit;
}

static int try_connect(struct sweep_ctx *x, long n)
{
    usock_t *s = ck_assert_nonnull(usock_socket(AF_INET, SOCK_STREAM, 0));
    int rc, err, hit;

    ck_assert_ok(usock_settimeout(s, 5.0));
    usock__alloc_fail_in(n);
    errno = 0;
    rc = usock_connect(s, &x->a);
    err = errno;
    hit = disarm();
    if (rc != 0) {
        ck_assert_str_eq(test_errname(err), "ENOMEM");
    }
    ck_assert_ok(usock_close(s));
    drain_listener(x);
    return hit;
}

static int try_accept(struct sweep_ctx *x, long n)
{
    usock_t *c = ck_assert_nonnull(usock_socket(AF_INET, SOCK_STREAM, 0));
    usock_t *got;
    char b;
    int err, hit;

    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_ok(usock_connect(c, &x->a));
    ck_assert_ok(usock_settimeout(x->l, 5.0));
    usock__alloc_fail_in(n);
    errno = 0;
    got = usock_accept(x->l, NULL);
    err = errno;
    hit = disarm();
    if (got == NULL) {
        ck_assert_str_eq(test_errname(err), "ENOMEM");
    } else {
        /* The accepted socket works. */
        ck_assert_int_eq(usock_send(c, "a", 1), 1);
        ck_assert_ok(usock_settimeout(got, 5.0));
        ck_assert_int_eq(usock_recv(got, &b, 1), 1);
        ck_assert_int_eq(b, 'a');
        ck_assert_ok(usock_close(got));
    }
    ck_assert_ok(usock_close(c));
    drain_listener(x);
    return hit;
}

static void sweep_task(void *arg)
{
    ((struct sweep_ctx *)arg)->ran = 1;
}

static int try_spawn(struct sweep_ctx *x, long n)
{
    int id, err, hit;

    x->ran = 0;
    usock__alloc_fail_in(n);
    errno = 0;
    id = usock_spawn(sweep_task, x);
    err = errno;
    hit = disarm();
    if (id < 0) {
        ck_assert_str_eq(test_errname(err), "ENOMEM");
        ck_assert_int_eq(x->ran, 0);
        /* The next spawn works. */
        id = usock_spawn(sweep_task, x);
        ck_assert_int_gt(id, 0);
    }
    ck_assert_ok(usock_join(id, 5.0));
    ck_assert_int_eq(x->ran, 1);
    return hit;
}

struct cold {
    long n;
    int hit, id, err, ran, ran_after;
};

static void cold_task(void *arg)
{
    ((struct cold *)arg)->ran++;
}

/* The first spawn of a new thread: it makes the thread's hub (reactor,
 * run queue, stack cache) as well as the task. */
static void *cold_thread(void *arg)
{
    struct cold *k = arg;

    usock__alloc_fail_in(k->n);
    errno = 0;
    k->id = usock_spawn(cold_task, k);
    k->err = errno;
    k->hit = disarm();
    if (k->id < 0) {
        /* No hub is left half made: the next spawn works. */
        k->id = usock_spawn(cold_task, k);
        k->ran_after = 1;
    }
    if (k->id > 0 && usock_run() != 0) {
        k->id = 0;
    }
    return NULL; /* the hub goes with the thread */
}

static int try_spawn_cold(struct sweep_ctx *x, long n)
{
    struct cold k = {n, 0, 0, 0, 0, 0};
    pthread_t th;

    (void)x;
    ck_assert_int_eq(pthread_create(&th, NULL, cold_thread, &k), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    if (k.ran_after) {
        ck_assert_str_eq(test_errname(k.err), "ENOMEM");
    }
    ck_assert_int_gt(k.id, 0);
    ck_assert_int_eq(k.ran, 1);
    return k.hit;
}

static int try_readline(struct sweep_ctx *x, long n)
{
    static const char line[] = "hello, i am server\n";
    usock_t *c, *s;
    char buf[64];
    ssize_t got;
    int err, hit;

    (void)x;
    test_pair(&c, &s);
    ck_assert_int_eq(usock_sendall(c, line, sizeof line - 1), 0);
    ck_assert_ok(usock_settimeout(s, 5.0));
    usock__alloc_fail_in(n);
    errno = 0;
    got = usock_readline(s, buf, sizeof buf);
    err = errno;
    hit = disarm();
    if (got < 0) {
        ck_assert_str_eq(test_errname(err), "ENOMEM");
        /* Nothing is lost: the line is all there for the next call. */
        got = usock_readline(s, buf, sizeof buf);
    }
    ck_assert_int_eq(got, (ssize_t)sizeof line - 1);
    ck_assert_int_eq(memcmp(buf, line, sizeof line - 1), 0);
    ck_assert_ok(usock_close(c));
    ck_assert_ok(usock_close(s));
    return hit;
}

/* For n = 1, 2, ...: fail the n-th allocation of the operation, until n
 * is past the allocations it makes.  Each failure must be ENOMEM with no
 * fd, socket or task left behind (memory: under check-asan and
 * check-valgrind); returns how many allocations the operation made. */
static int sweep(const char *name, int (*try)(struct sweep_ctx *, long),
                 struct sweep_ctx *x)
{
    int fds0, n;
    long socks0;

    try(x, 0); /* warm: the reactor, the stack cache, the run queue */
    try(x, 0);
    fds0 = count_fds();
    socks0 = usock__live_sockets();
    for (n = 1; n <= 200; n++) {
        int hit = try(x, n);

        ck_assert_msg(count_fds() == fds0, "%s, allocation %d: %d fds, was %d",
                      name, n, count_fds(), fds0);
        ck_assert_msg(usock__live_sockets() == socks0,
                      "%s, allocation %d: %ld sockets, was %ld", name, n,
                      usock__live_sockets(), socks0);
        ck_assert_msg(usock__live_tasks() == 0, "%s, allocation %d: %zu tasks",
                      name, n, usock__live_tasks());
        if (!hit) {
            break; /* n is past the operation's allocations */
        }
    }
    ck_assert_msg(n <= 200, "%s: still allocating at 200", name);
    if (getenv("USOCK_TEST_TIMING") != NULL) {
        fprintf(stderr, "F15 %s %s: %d allocations, each failed in turn "
                "(ENOMEM, nothing left behind)\n", usock__reactor_name(), name,
                n - 1);
    }
    return n - 1;
}

/* F15's sweep: socket, connect, accept, spawn (on a warm hub and as a new
 * thread's first call) and readline with their 1st, 2nd, ... allocation
 * failing. */
START_TEST(alloc_failure_sweep)
{
    struct sweep_ctx x = {NULL, {0}, 0};

    x.l = test_listener(&x.a);
    /* Each operation makes at least one allocation the sweep can fail
     * (socket, accept: the usock_t; readline: the read buffer). */
    ck_assert_int_ge(sweep("socket", try_socket, &x), 1);
    sweep("connect", try_connect, &x);
    ck_assert_int_ge(sweep("accept", try_accept, &x), 1);
    sweep("spawn", try_spawn, &x);
    ck_assert_int_ge(sweep("spawn on a new thread", try_spawn_cold, &x), 1);
    ck_assert_int_ge(sweep("readline", try_readline, &x), 1);
}
END_TEST

/* ---- F06: an unreachable host times out, other tasks keep running ----- */

struct ticker {
    int ticks, stop;
};

static void ticker_task(void *arg)
{
    struct ticker *t = arg;

    while (!t->stop && usock_sleep(0.01) == 0) {
        t->ticks++;
    }
}

START_TEST(unreachable_times_out)
{
    /* A host whose SYNs vanish: this machine has no iptables, nft or dummy
     * links, so the drop is the kernel's own: a listener whose accept
     * queue is full drops every new SYN (tcp_conn_request), and the
     * connect sees no answer at all, as behind a DROP rule. */
    usock_t *l = ck_assert_nonnull(usock_socket(AF_INET, SOCK_STREAM, 0));
    usock_addr_t a;
    usock_t *c[4];
    struct ticker t = {0};
    double el[3];
    int n = 0;

    ck_assert_ok(usock_addr_ip(&a, "127.0.0.1", 0));
    ck_assert_ok(usock_bind(l, &a));
    ck_assert_ok(usock_listen(l, 0));
    ck_assert_ok(usock_getsockname(l, &a));
    ck_assert_int_gt(usock_spawn(ticker_task, &t), 0);
    for (;;) {
        ck_assert_int_lt(n, 4);
        c[n] = ck_assert_nonnull(usock_socket(AF_INET, SOCK_STREAM, 0));
        ck_assert_ok(usock_settimeout(c[n], 0.5));
        int ticks0 = t.ticks;
        double t0 = usock_now();
        if (usock_connect(c[n], &a) == 0) {
            n++; /* room in the queue still */
            continue;
        }
        el[0] = usock_now() - t0;
        ck_assert_str_eq(test_errname(errno), "ETIMEDOUT");
        ck_assert_msg(t.ticks - ticks0 >= 20, "ticker ran %d times in 0.5 s",
                      t.ticks - ticks0);
        break;
    }
    ck_assert_int_ge(n, 1);
    /* Two more trials against the same full queue: the row's 0.5 s + tol
     * is asserted on the median of three (see test_assert_timing). */
    for (int i = 1; i < 3; i++) {
        usock_t *x = ck_assert_nonnull(usock_socket(AF_INET, SOCK_STREAM, 0));
        int ticks0 = t.ticks;
        double t0 = usock_now();

        ck_assert_ok(usock_settimeout(x, 0.5));
        ck_assert_int_eq(usock_connect(x, &a), -1);
        el[i] = usock_now() - t0;
        ck_assert_str_eq(test_errname(errno), "ETIMEDOUT");
        ck_assert_msg(t.ticks - ticks0 >= 20, "ticker ran %d times in 0.5 s",
                      t.ticks - ticks0);
        ck_assert_ok(usock_close(x));
    }
    test_assert_timing("connect", 0.5, TEST_TOL, el, 3);
    t.stop = 1;
    ck_assert_ok(usock_run());
}
END_TEST

/* ---- T11: time is CLOCK_MONOTONIC, by construction -------------------- */

START_TEST(clock_is_monotonic)
{
    /* A wall-clock step cannot move usocket's deadlines: every deadline
     * is on CLOCK_MONOTONIC (stepping the machine's clock from a test
     * would disturb everything else running here, and a time namespace
     * offsets only the monotonic clocks).  So: usock_now is that clock,
     * and a sleep measured on it is exact. */
    for (int i = 0; i < 3; i++) {
        struct timespec ts;
        ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
        double mono = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        double now = usock_now();
        ck_assert_msg(now - mono >= 0 && now - mono < 0.001,
                      "usock_now %.6f, CLOCK_MONOTONIC %.6f", now, mono);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ck_assert_ok(usock_sleep(0.2));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double slept = (double)(b.tv_sec - a.tv_sec) +
                   (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    ck_assert_msg(slept >= 0.2 && slept <= 0.2 + 0.02 * test_mult() + 0.1,
                  "slept %.6f s of monotonic time", slept);
}
END_TEST

/* valgrind keeps its own fd table and does not apply a lowered
 * RLIMIT_NOFILE to poll(2), which two cases rely on. */
static void add_fault(TCase *tc)
{
    tcase_add_test(tc, watch_enomem);
    tcase_add_test(tc, alloc_failure_sweep);
    tcase_add_test(tc, sleep_enomem);
    if (test_under_valgrind()) {
        test_skip("fault:reactor_failure, fault:poll_error",
                  "valgrind does not apply RLIMIT_NOFILE to poll(2)");
    } else {
        tcase_add_test(tc, reactor_failure);
        tcase_add_test(tc, poll_error);
    }
    tcase_add_test(tc, post_spawn_enomem);
    tcase_add_test(tc, join_cancel_exdev);
    tcase_add_test(tc, thread_exit_unwinds);
    tcase_add_test(tc, unix_connect_full_backlog);
    tcase_add_test(tc, fork_both_work);
    if (test_under_valgrind()) {
        /* Each child is checked for leaks at its _exit, and the blocks of
         * the parent's other threads (their hubs, reachable from their
         * thread-local pointers only) are lost in the child: valgrind's
         * --error-exitcode then replaces the status the test reads. */
        test_skip("fault:fork_while_posted, fault:fork_post_other_hub",
                  "under valgrind each forked child's exit status is "
                  "valgrind's leak verdict (the parent's other threads' "
                  "blocks are unreachable in a child), not the child's "
                  "own; they run in the plain build and under TSan");
    } else if (fault_asan) {
        /* Other threads allocate while these fork; the child allocates. */
        test_skip("fault:fork_while_posted",
                  "gcc 12's libasan has no fork handler: a fork can catch "
                  "its allocator's lock held by another thread, and the "
                  "child's next malloc hangs (not the library's lock; runs "
                  "under TSan, valgrind and the plain build)");
        test_skip("fault:fork_post_other_hub",
                  "gcc 12's libasan has no fork handler (as "
                  "fork_while_posted)");
    } else {
        tcase_add_test(tc, fork_while_posted);
        tcase_add_test(tc, fork_post_other_hub);
    }
    tcase_add_test(tc, max_tasks);
    tcase_add_test(tc, resolver_pool_bounded);
    tcase_add_test(tc, readline_bounded);
    tcase_add_test(tc, read_failure_bounded);
    tcase_add_test(tc, close_from_other_thread);
    tcase_add_test(tc, unreachable_times_out);
    tcase_add_test(tc, clock_is_monotonic);
}

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc;

    add_reactor_tcases(s, "fault", add_fault, 30);
    tc = tcase_create("fault:plain");
    tcase_add_test(tc, no_pthread_key);
#ifdef FAULT_CALLOC
    if (test_under_valgrind()) {
        test_skip("fault:setspecific_enomem",
                  "valgrind sends libc's calloc to its own, not the test's");
    } else {
        tcase_add_test(tc, setspecific_enomem);
    }
#else
    test_skip("fault:setspecific_enomem",
              "replacing calloc would replace the sanitizer's");
#endif
    tcase_add_test(tc, fixture_catches_leaks);
    suite_add_tcase(s, tc);
#ifdef HAVE_LIBEV
    tc = tcase_create("fault:ev-only");
    tcase_add_checked_fixture(tc, ev_only_setup, NULL);
    tcase_add_test(tc, ev_alloc_no_abort);
    suite_add_tcase(s, tc);
#endif
    return s;
}

int main(void)
{
    return test_main(fault_suite());
}
