/*
 * Suite "embed": a loop that is not libev drives the hub through
 * usock_hub_fd, usock_hub_timeout and usock_hub_run_nowait (here a
 * hand-written poll(2) loop with its own pipe and its own timer), on the
 * ev and the epoll reactors alike; on the poll reactor the three calls
 * fail with ENOTSUP.  Also: handing an
 * accepted socket to a task on another thread's hub (usock_hub_post).
 */
#include "config.h"

#include <check.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <usocket.h>

#ifdef HAVE_LIBEV
#include <ev.h>
#endif

#include "helpers.h"

#define NECHO 100
#define NLINES 20

#if defined(HAVE_LIBEV) || defined(HAVE_EPOLL)

/* Is fd readable within ms milliseconds? */
static int readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;

    while ((r = poll(&p, 1, ms)) < 0) {
    }
    return r > 0 && (p.revents & POLLIN);
}

/* ---- the daemon: a poll(2) loop with its own pipe and timer ------------- */

struct daemon {
    int pipe[2];        /* the daemon's own descriptor */
    double tick;        /* its own periodic timer (seconds) */
    int ticks;
    double max_late;    /* the worst lateness of a tick */
    int pipe_bytes;     /* bytes its pipe watcher read */
    int runs;           /* usock_hub_run_nowait calls */
    int alive;          /* what the last one returned */
    int early;          /* times the loop woke for the hub's time before
                           it had anything to do */
};

static void daemon_init(struct daemon *d, double tick)
{
    memset(d, 0, sizeof *d);
    ck_assert_ok(pipe(d->pipe));
    d->tick = tick;
}

static void daemon_fini(struct daemon *d)
{
    close(d->pipe[0]);
    close(d->pipe[1]);
}

/* Run the daemon's loop until *stop is non-zero or `limit` seconds pass.
 * Returns 1 when it stopped because of *stop. */
static int daemon_run(struct daemon *d, const int *stop, double limit)
{
    int hfd = usock_hub_fd();
    double end = usock_now() + limit;
    double next = usock_now() + d->tick;

    ck_assert_int_ge(hfd, 0);
    while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
        double now = usock_now();
        if (now >= end) {
            return 0;
        }
        double t = usock_hub_timeout();
        double wait = next - now;
        int hub_time = 0;
        if (t != USOCK_NONE && t <= wait) {
            wait = t;
            hub_time = 1;
        }
        if (end - now < wait) {
            wait = end - now;
        }
        struct pollfd p[2] = {{.fd = hfd, .events = POLLIN},
                              {.fd = d->pipe[0], .events = POLLIN}};
        int ms = wait <= 0 ? 0 : (int)ceil(wait * 1000);
        int r = poll(p, 2, ms);
        if (r < 0) {
            continue;
        }
        if (p[1].revents & POLLIN) {
            char buf[64];
            ssize_t n = read(d->pipe[0], buf, sizeof buf);
            d->pipe_bytes += n > 0 ? (int)n : 0;
        }
        now = usock_now();
        if (now >= next) {
            double late = now - next;
            d->max_late = late > d->max_late ? late : d->max_late;
            d->ticks++;
            next += d->tick;
            if (next < now) {
                next = now + d->tick;
            }
        }
        /* The hub's turn: its fd is readable, or its time has come. */
        int due = hub_time && r == 0;
        if ((p[0].revents & POLLIN) || due) {
            if (!(p[0].revents & POLLIN) && usock_hub_timeout() > 0) {
                d->early++;
            }
            d->alive = usock_hub_run_nowait();
            ck_assert_int_ge(d->alive, 0);
            d->runs++;
        }
    }
    return 1;
}

/* ---- 100 echo tasks ------------------------------------------------------ */

struct echo {
    usock_t *l;
    usock_addr_t a;
    int served, failed, all_done;
    int clients_ok;
    int pipe_w;
};

static void echo_conn(void *arg)
{
    struct echo *e = *(struct echo **)arg;
    usock_t *c = ((usock_t **)arg)[1];
    char line[128];
    ssize_t n;

    free(arg);
    usock_settimeout(c, 10.0);
    while ((n = usock_readline(c, line, sizeof line)) > 0) {
        if (usock_sendall(c, line, (size_t)n) < 0) {
            e->failed++;
            break;
        }
    }
    usock_close(c);
    if (++e->served == NECHO) {
        __atomic_store_n(&e->all_done, 1, __ATOMIC_RELEASE);
    }
}

static void echo_acceptor(void *arg)
{
    struct echo *e = arg;

    for (int i = 0; i < NECHO; i++) {
        usock_t *c = usock_accept(e->l, NULL);
        void **pair = malloc(2 * sizeof(void *));
        if (c == NULL || pair == NULL) {
            e->failed++;
            free(pair);
            return;
        }
        pair[0] = e;
        pair[1] = c;
        if (usock_spawn(echo_conn, pair) < 0) {
            e->failed++;
        }
    }
}

/* Another thread, without tasks: 100 clients at once, NLINES lines each;
 * one byte on the daemon's pipe per client done. */
static void *echo_clients(void *arg)
{
    struct echo *e = arg;
    usock_t *s[NECHO];
    char line[128], got[128];
    int ok = 0;

    for (int i = 0; i < NECHO; i++) {
        s[i] = usock_socket(AF_INET, SOCK_STREAM, 0);
        if (s[i] == NULL) {
            return NULL;
        }
        usock_settimeout(s[i], 10.0);
        if (usock_connect(s[i], &e->a) < 0) {
            return NULL;
        }
    }
    for (int k = 0; k < NLINES; k++) {
        for (int i = 0; i < NECHO; i++) {
            int n = snprintf(line, sizeof line, "client %d line %d\n", i, k);
            usock_sendall(s[i], line, (size_t)n);
        }
        for (int i = 0; i < NECHO; i++) {
            int n = snprintf(line, sizeof line, "client %d line %d\n", i, k);
            if (usock_readline(s[i], got, sizeof got) == n &&
                memcmp(got, line, (size_t)n) == 0 && k == NLINES - 1) {
                ok++;
            }
        }
    }
    for (int i = 0; i < NECHO; i++) {
        usock_close(s[i]);
        if (write(e->pipe_w, "x", 1) != 1) {
            break;
        }
    }
    e->clients_ok = ok;
    return NULL;
}

START_TEST(poll_loop_drives_100_echo_tasks)
{
    static struct echo e;
    struct daemon d;
    pthread_t th;

    memset(&e, 0, sizeof e);
    daemon_init(&d, 0.02);
    e.l = test_listener(&e.a);
    e.pipe_w = d.pipe[1];
    ck_assert_int_gt(usock_spawn(echo_acceptor, &e), 0);
    ck_assert_int_eq(pthread_create(&th, NULL, echo_clients, &e), 0);
    double t0 = usock_now();
    int stopped = daemon_run(&d, &e.all_done, 30.0 * test_mult());
    double took = usock_now() - t0;
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(stopped, "the echo tasks did not finish: served %d",
                  e.served);
    ck_assert_int_eq(e.failed, 0);
    ck_assert_int_eq(e.clients_ok, NECHO);
    /* Tasks are finished, the loop's own pipe watcher saw every client. */
    ck_assert_int_eq(d.alive, 0);
    for (int i = 0; d.pipe_bytes < NECHO && i < 100; i++) {
        if (readable(d.pipe[0], 50)) {
            char buf[128];
            ssize_t n = read(d.pipe[0], buf, sizeof buf);
            d.pipe_bytes += n > 0 ? (int)n : 0;
        }
    }
    ck_assert_int_eq(d.pipe_bytes, NECHO);
    /* The daemon's own timer kept firing on time while the tasks worked. */
    /* (Under sanitizers or valgrind a loop pass itself is slower: the
     * count is scaled as the lateness is.) */
    ck_assert_msg(d.ticks >= (int)(took / (d.tick * test_mult())) - 2,
                  "%d ticks of 20 ms in %.3f s", d.ticks, took);
    ck_assert_msg(d.max_late < 0.1 * test_mult(),
                  "a tick of the daemon's timer came %.3f s late",
                  d.max_late);
    ck_assert_msg(d.early == 0, "%d wake-ups before the hub's deadline",
                  d.early);
    usock_close(e.l);
    daemon_fini(&d);
}
END_TEST

/* ---- posts from other threads wake the loop ----------------------------- */

struct poster {
    usock_hub_t *h;
    double delay;
    int ran;
    int shutdown; /* post a shutdown instead */
};

static void posted(void *arg)
{
    __atomic_store_n(&((struct poster *)arg)->ran, 1, __ATOMIC_RELEASE);
}

static void *poster_thread(void *arg)
{
    struct poster *p = arg;
    struct timespec ts = {0, (long)(p->delay * 1e9)};

    nanosleep(&ts, NULL);
    if (p->shutdown) {
        usock_hub_shutdown(p->h);
    } else {
        usock_hub_post(p->h, posted, p);
    }
    return NULL;
}

START_TEST(post_from_other_thread_wakes_loop)
{
    struct poster p = {.delay = 0.05};
    pthread_t th;
    int fd = usock_hub_fd();

    ck_assert_int_ge(fd, 0);
    p.h = ck_assert_nonnull(usock_hub_self());
    ck_assert(usock_hub_timeout() == USOCK_NONE);
    ck_assert_int_eq(usock_hub_run_nowait(), 0);
    ck_assert(!readable(fd, 0));
    for (int round = 0; round < 3; round++) {
        p.ran = 0;
        ck_assert_int_eq(pthread_create(&th, NULL, poster_thread, &p), 0);
        double t0 = usock_now();
        ck_assert_msg(readable(fd, 5000), "a post did not wake the loop");
        ck_assert_duration(t0, 0.04, 0.2);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
        /* The posted task runs within this call or the next. */
        for (int i = 0; i < 2 && !p.ran; i++) {
            ck_assert_int_ge(usock_hub_run_nowait(), 0);
        }
        ck_assert(p.ran);
        ck_assert_int_eq(usock_hub_run_nowait(), 0);
        ck_assert_msg(!readable(fd, 50), "still readable after a post");
    }
}
END_TEST

static void sleeper(void *arg)
{
    int *r = arg;

    *r = usock_sleep(30.0) < 0 ? errno : 0;
}

START_TEST(shutdown_from_other_thread_wakes_loop)
{
    struct poster p = {.delay = 0.05, .shutdown = 1};
    int results[5];
    struct daemon d;
    pthread_t th;
    int never = 0;

    daemon_init(&d, 0.05);
    p.h = ck_assert_nonnull(usock_hub_self());
    for (int i = 0; i < 5; i++) {
        results[i] = -1;
        ck_assert_int_gt(usock_spawn(sleeper, &results[i]), 0);
    }
    ck_assert(usock_hub_timeout() == 0);
    ck_assert_int_eq(usock_hub_run_nowait(), 5);
    ck_assert(usock_hub_timeout() > 29.0);
    ck_assert_int_eq(pthread_create(&th, NULL, poster_thread, &p), 0);
    double t0 = usock_now();
    d.alive = 5;
    while (d.alive != 0 && usock_now() < t0 + 5) {
        daemon_run(&d, &never, 0.01);
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(usock_hub_run_nowait(), 0);
    ck_assert_duration(t0, 0.04, 1.0);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(results[i], ECANCELED);
    }
    daemon_fini(&d);
}
END_TEST

/* ---- what usock_hub_timeout reports ------------------------------------- */

static void nothing(void *arg)
{
    (void)arg;
}

static void sleep_then_mark(void *arg)
{
    double *woke = arg;

    if (usock_sleep(0.2) == 0) {
        *woke = usock_now();
    }
}

START_TEST(timeout_rules)
{
    double woke = 0;

    ck_assert(usock_hub_timeout() == USOCK_NONE);
    /* A task just spawned is ready: 0. */
    ck_assert_int_gt(usock_spawn(nothing, NULL), 0);
    ck_assert(usock_hub_timeout() == 0);
    ck_assert_int_eq(usock_hub_run_nowait(), 0);
    ck_assert(usock_hub_timeout() == USOCK_NONE);

    double t0 = usock_now();
    ck_assert_int_gt(usock_spawn(sleep_then_mark, &woke), 0);
    ck_assert(usock_hub_timeout() == 0);
    ck_assert_int_eq(usock_hub_run_nowait(), 1);
    double due = t0 + 0.2;
    /* Never a wake-up before the deadline: wait exactly what the hub
     * says, rounded up to the millisecond as the man page tells. */
    int runs = 0;
    while (woke == 0 && usock_now() < t0 + 5) {
        double t = usock_hub_timeout();
        double now = usock_now();
        ck_assert(t >= 0);
        ck_assert_msg(t == 0 || now + t >= due - 1e-6,
                      "timeout %.6f s, %.6f s before the deadline", t,
                      due - now);
        readable(usock_hub_fd(), (int)ceil(t * 1000));
        runs++;
        ck_assert_int_ge(usock_hub_run_nowait(), 0);
    }
    ck_assert_double_ge(woke, due);
    ck_assert_msg(runs <= 2, "%d wake-ups for one 0.2 s sleep", runs);
    ck_assert_int_eq(usock_hub_run_nowait(), 0);
    ck_assert(usock_hub_timeout() == USOCK_NONE);
}
END_TEST

/* ---- no spin: never readable without work ------------------------------- */

struct quiet {
    usock_t *s;
    int got;
    int phase;
};

static void read_once_then_sleep(void *arg)
{
    struct quiet *q = arg;
    char b[16];

    if (usock_recv(q->s, b, sizeof b) > 0) {
        q->got = 1;
    }
    usock_sleep(10.0);
}

START_TEST(fd_not_readable_without_work)
{
    usock_t *c, *s;
    struct quiet q = {0};
    int fd = usock_hub_fd();

    ck_assert_int_ge(fd, 0);
    test_pair(&c, &s);
    q.s = s;
    /* An idle hub. */
    ck_assert_int_eq(usock_hub_run_nowait(), 0);
    ck_assert(!readable(fd, 100));
    /* A task blocked in recv on a quiet socket. */
    int tid = usock_spawn(read_once_then_sleep, &q);
    ck_assert_int_gt(tid, 0);
    ck_assert_int_eq(usock_hub_run_nowait(), 1);
    ck_assert(!readable(fd, 100));
    /* Its data comes: readable, and one call runs the task. */
    ck_assert_int_eq(usock_sendall(c, "hi", 2), 0);
    ck_assert(readable(fd, 2000));
    ck_assert_int_eq(usock_hub_run_nowait(), 1);
    ck_assert(q.got);
    /* Bytes on a socket nobody waits on: at most a call or two to learn
     * it, then quiet. */
    ck_assert_int_eq(usock_sendall(c, "more", 4), 0);
    int calls = 0;
    while (readable(fd, 100) && calls < 10) {
        ck_assert_int_eq(usock_hub_run_nowait(), 1);
        calls++;
    }
    ck_assert_msg(calls <= 2, "readable after %d calls", calls);
    ck_assert(!readable(fd, 200));
    /* The same fd number all along, after sockets come and go. */
    for (int i = 0; i < 20; i++) {
        usock_t *x, *y;
        test_pair(&x, &y);
        usock_close(x);
        usock_close(y);
    }
    ck_assert_int_eq(usock_hub_fd(), fd);
    ck_assert_ok(usock_cancel(tid));
    ck_assert_ok(usock_join(tid, 2.0));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- errors --------------------------------------------------------------- */

struct from_task {
    int rc, err;
};

static void run_nowait_in_task(void *arg)
{
    struct from_task *f = arg;

    errno = 0;
    f->rc = usock_hub_run_nowait();
    f->err = errno;
}

START_TEST(run_nowait_from_task_is_edeadlk)
{
    struct from_task f = {0};

    ck_assert_int_gt(usock_spawn(run_nowait_in_task, &f), 0);
    ck_assert_int_eq(usock_hub_run_nowait(), 0);
    ck_assert_int_eq(f.rc, -1);
    ck_assert_int_eq(f.err, EDEADLK);
}
END_TEST

START_TEST(first_call_and_alive_count)
{
    /* usock_hub_fd may be a thread's first usocket call. */
    int fd = usock_hub_fd();
    int results[3];

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(usock_hub_fd(), fd);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_gt(usock_spawn(sleeper, &results[i]), 0);
    }
    ck_assert_int_eq(usock_hub_run_nowait(), 3);
    ck_assert_int_eq(usock_hub_run_nowait(), 3);
    ck_assert_ok(usock_hub_shutdown(usock_hub_self()));
    ck_assert_int_eq(usock_hub_run_nowait(), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(results[i], ECANCELED);
    }
}
END_TEST

#ifdef HAVE_LIBEV
static void mark_ran(void *arg)
{
    *(int *)arg = 1;
}

START_TEST(ev_loop_hub_is_ebusy)
{
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    ck_assert_ok(usock_hub_use_ev_loop(loop));
    ck_assert_errno(usock_hub_fd(), EBUSY);
    ck_assert_errno(usock_hub_run_nowait(), EBUSY);
    errno = 0;
    ck_assert(usock_hub_timeout() == USOCK_NONE);
    ck_assert_int_eq(errno, EBUSY);
}
END_TEST
#endif

const char *usock__reactor_name(void); /* src/internal.h */

#ifdef HAVE_LIBEV
static void default_setup(void)
{
    unsetenv("USOCKET_REACTOR");
}

/* With USOCKET_REACTOR unset (the default: epoll on Linux), a daemon's
 * libev loop still gets a hub on ev, and its tasks run from that loop. */
START_TEST(ev_loop_with_default_reactor)
{
    struct ev_loop *loop = ev_loop_new(0);
    int ran = 0;

    ck_assert_ptr_nonnull(loop);
    ck_assert_ok(usock_hub_use_ev_loop(loop));
    ck_assert_str_eq(usock__reactor_name(), "ev");
    ck_assert_int_gt(usock_spawn(mark_ran, &ran), 0);
    for (int i = 0; i < 100 && !ran; i++) {
        ev_run(loop, EVRUN_NOWAIT);
    }
    ck_assert_int_eq(ran, 1);
}
END_TEST
#endif

static void add_driven_tests(TCase *tc)
{
    tcase_add_test(tc, poll_loop_drives_100_echo_tasks);
    tcase_add_test(tc, post_from_other_thread_wakes_loop);
    tcase_add_test(tc, shutdown_from_other_thread_wakes_loop);
    tcase_add_test(tc, timeout_rules);
    tcase_add_test(tc, fd_not_readable_without_work);
    tcase_add_test(tc, run_nowait_from_task_is_edeadlk);
    tcase_add_test(tc, first_call_and_alive_count);
}

#endif /* HAVE_LIBEV || HAVE_EPOLL */

#ifdef HAVE_LIBEV
static void ev_setup(void)
{
    setenv("USOCKET_REACTOR", "ev", 1);
}
#endif

#ifdef HAVE_EPOLL
static void epoll_setup(void)
{
    setenv("USOCKET_REACTOR", "epoll", 1);
}

/* The epoll reactor gives its own epoll set as the hub fd, and is the
 * reactor in use; only ev can live inside a daemon's libev loop. */
START_TEST(epoll_hub_fd_is_its_set)
{
    int fd = usock_hub_fd();
    char path[64], target[64];
    ssize_t k;

    ck_assert_int_ge(fd, 0);
    ck_assert_str_eq(usock__reactor_name(), "epoll");
    ck_assert_int_eq(usock_hub_fd(), fd);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    k = readlink(path, target, sizeof target - 1);
    ck_assert_int_gt(k, 0);
    target[k] = '\0';
    ck_assert_str_eq(target, "anon_inode:[eventpoll]");
#ifdef HAVE_LIBEV
    struct ev_loop *loop = ev_loop_new(0);
    ck_assert_ptr_nonnull(loop);
    ck_assert_errno(usock_hub_use_ev_loop(loop), EBUSY); /* hub made */
    ev_loop_destroy(loop);
#endif
}
END_TEST

#ifdef HAVE_LIBEV
/* Before any hub: asking for a daemon's loop with USOCKET_REACTOR=epoll. */
START_TEST(epoll_refuses_ev_loop)
{
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    ck_assert_errno(usock_hub_use_ev_loop(loop), ENOTSUP);
    ev_loop_destroy(loop);
}
END_TEST
#endif
#endif /* HAVE_EPOLL */

/* ---- the poll reactor: ENOTSUP, and the rest keeps working -------------- */

static void mark(void *arg)
{
    *(int *)arg = 1;
}

START_TEST(poll_reactor_is_enotsup)
{
    int ran = 0;

    ck_assert_errno(usock_hub_fd(), ENOTSUP);
    errno = 0;
    ck_assert(usock_hub_timeout() == USOCK_NONE);
    ck_assert_int_eq(errno, ENOTSUP);
    ck_assert_errno(usock_hub_run_nowait(), ENOTSUP);
    ck_assert_int_gt(usock_spawn(mark, &ran), 0);
    ck_assert_ok(usock_run());
    ck_assert(ran);
}
END_TEST

static void poll_setup(void)
{
    setenv("USOCKET_REACTOR", "poll", 1);
}

/* ---- an accepted socket handed to another thread's hub ------------------ */

struct worker {
    pthread_t th;
    usock_hub_t *h;
    int ready, served;
    pthread_t served_on;
};

static void keep_alive(void *arg)
{
    struct worker *w = arg;

    /* The worker's hub stays up until this task is cancelled. */
    while (usock_sleep(1.0) == 0) {
    }
    (void)w;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    w->h = usock_hub_self();
    usock_spawn(keep_alive, w);
    __atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
    usock_run(); /* until usock_hub_shutdown */
    return NULL;
}

static struct worker *the_worker;

/* Runs on the worker's hub with the socket accepted on the main hub. */
static void serve_handed(void *arg)
{
    usock_t *c = arg;
    char line[64];
    ssize_t n;

    usock_settimeout(c, 5.0);
    while ((n = usock_readline(c, line, sizeof line)) > 0) {
        usock_sendall(c, line, (size_t)n);
    }
    usock_close(c);
    the_worker->served_on = pthread_self();
    __atomic_add_fetch(&the_worker->served, 1, __ATOMIC_RELEASE);
}

static void hand_over(void *arg)
{
    usock_t *l = arg;

    for (int i = 0; i < 10; i++) {
        usock_t *c = usock_accept(l, NULL);
        if (c == NULL || usock_hub_post(the_worker->h, serve_handed, c) < 0) {
            return;
        }
    }
}

static void hand_client(void *arg)
{
    usock_addr_t *a = arg;
    char got[64];

    for (int i = 0; i < 10; i++) {
        usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);
        usock_settimeout(s, 5.0);
        if (usock_connect(s, a) == 0 &&
            usock_sendall(s, "handed\n", 7) == 0 &&
            usock_readline(s, got, sizeof got) == 7) {
            usock_shutdown(s, SHUT_WR);
            usock_recv(s, got, sizeof got);
        }
        usock_close(s);
    }
}

START_TEST(accepted_socket_to_other_hub)
{
    static struct worker w;
    usock_addr_t a;
    usock_t *l = test_listener(&a);

    memset(&w, 0, sizeof w);
    the_worker = &w;
    ck_assert_int_eq(pthread_create(&w.th, NULL, worker_main, &w), 0);
    for (int i = 0; i < 500 && !__atomic_load_n(&w.ready, __ATOMIC_ACQUIRE);
         i++) {
        usleep(10000);
    }
    ck_assert(w.ready);
    usock_settimeout(l, 5.0);
    ck_assert_int_gt(usock_spawn(hand_over, l), 0);
    ck_assert_int_gt(usock_spawn(hand_client, &a), 0);
    ck_assert_ok(usock_run());
    for (int i = 0; i < 500 && __atomic_load_n(&w.served, __ATOMIC_ACQUIRE) <
                                   10;
         i++) {
        usleep(10000);
    }
    ck_assert_int_eq(w.served, 10);
    ck_assert(pthread_equal(w.served_on, w.th));
    ck_assert_ok(usock_hub_shutdown(w.h));
    ck_assert_int_eq(pthread_join(w.th, NULL), 0);
    usock_close(l);
}
END_TEST

static void add_handoff_tests(TCase *tc)
{
    tcase_add_test(tc, accepted_socket_to_other_hub);
}

static Suite *embed_suite(void)
{
    Suite *s = suite_create("embed");
    TCase *tc;

#ifdef HAVE_LIBEV
    tc = tcase_create("driven:ev");
    tcase_add_checked_fixture(tc, ev_setup, NULL);
    add_driven_tests(tc);
    tcase_add_test(tc, ev_loop_hub_is_ebusy);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
#endif
#ifdef HAVE_EPOLL
    tc = tcase_create("driven:epoll");
    tcase_add_checked_fixture(tc, epoll_setup, NULL);
    add_driven_tests(tc);
    tcase_add_test(tc, epoll_hub_fd_is_its_set);
#ifdef HAVE_LIBEV
    tcase_add_test(tc, epoll_refuses_ev_loop);
#endif
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
#endif
#ifdef HAVE_LIBEV
    tc = tcase_create("default");
    tcase_add_checked_fixture(tc, default_setup, NULL);
    tcase_add_test(tc, ev_loop_with_default_reactor);
    tcase_set_timeout(tc, 10);
    suite_add_tcase(s, tc);
#endif
    tc = tcase_create("driven:poll");
    tcase_add_checked_fixture(tc, poll_setup, NULL);
    tcase_add_test(tc, poll_reactor_is_enotsup);
    tcase_set_timeout(tc, 10);
    suite_add_tcase(s, tc);
    add_reactor_tcases(s, "handoff", add_handoff_tests, 30);
    return s;
}

int main(void)
{
    return test_main(embed_suite());
}
