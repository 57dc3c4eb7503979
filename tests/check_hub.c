/*
 * Suite "hub": one hub per thread, usock_hub_post and usock_hub_shutdown
 * from other threads, hubs freed at thread exit, and (with libev) embedding
 * the hub in a daemon's own ev_loop.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
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

#define NPOSTS 100
#define NBLOCKED 50
#define NTHREADS 200

static pthread_t main_thread;

static void nap(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};

    while (nanosleep(&ts, &ts) != 0) {
    }
}

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
    return n;
}

/* ---- one hub per thread ------------------------------------------------- */

struct self_probe {
    usock_hub_t *h1, *h2;
    int id;
};

static void *self_thread(void *arg)
{
    struct self_probe *p = arg;

    p->h1 = usock_hub_self();
    p->h2 = usock_hub_self();
    p->id = usock_self();
    return NULL;
}

START_TEST(hub_self_per_thread)
{
    struct self_probe p = {0};
    pthread_t th;
    usock_hub_t *h = usock_hub_self();

    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_eq(usock_hub_self(), h);
    ck_assert_int_eq(pthread_create(&th, NULL, self_thread, &p), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_ptr_nonnull(p.h1);
    ck_assert_ptr_eq(p.h1, p.h2);
    ck_assert_ptr_ne(p.h1, h);
    ck_assert_int_gt(p.id, 0);
    ck_assert_int_ne(p.id, usock_self());
    ck_assert_ptr_eq(usock_hub_self(), h);
}
END_TEST

/* ---- usock_hub_post ----------------------------------------------------- */

struct posts {
    usock_hub_t *h;
    int ran, wrong_thread, failed, keeper;
    int ids[NPOSTS];
};

static void posted(void *arg)
{
    struct posts *ps = arg;

    if (!pthread_equal(pthread_self(), main_thread)) {
        ps->wrong_thread++;
    }
    if (ps->ran < NPOSTS) {
        ps->ids[ps->ran] = usock_self();
    }
    ps->ran++;
}

/* Keeps usock_run busy until every post ran (at most 10 s). */
static void keeper(void *arg)
{
    struct posts *ps = arg;
    double end = usock_now() + 10.0;

    while (ps->ran < NPOSTS && usock_now() < end) {
        usock_sleep(0.005);
    }
}

static void *poster(void *arg)
{
    struct posts *ps = arg;

    for (int i = 0; i < NPOSTS; i++) {
        if (usock_hub_post(ps->h, posted, ps) != 0) {
            __atomic_add_fetch(&ps->failed, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

START_TEST(post_from_other_thread)
{
    static struct posts ps;
    pthread_t th;

    memset(&ps, 0, sizeof ps);
    main_thread = pthread_self();
    ps.h = ck_assert_nonnull(usock_hub_self());
    ps.keeper = usock_spawn(keeper, &ps);
    ck_assert_int_gt(ps.keeper, 0);
    ck_assert_int_eq(pthread_create(&th, NULL, poster, &ps), 0);
    double t0 = usock_now();
    ck_assert_ok(usock_run());
    ck_assert_duration(t0, 0, 5.0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(ps.failed, 0);
    ck_assert_int_eq(ps.ran, NPOSTS);
    ck_assert_int_eq(ps.wrong_thread, 0);
    for (int i = 0; i < NPOSTS; i++) {
        /* Each ran as a fresh task of its own. */
        ck_assert_int_gt(ps.ids[i], ps.keeper);
        ck_assert_int_ne(ps.ids[i], usock_self());
        for (int j = 0; j < i; j++) {
            ck_assert_int_ne(ps.ids[i], ps.ids[j]);
        }
    }
}
END_TEST

static void nothing(void *arg)
{
    (void)arg;
}

START_TEST(post_errors)
{
    usock_hub_t *h = ck_assert_nonnull(usock_hub_self());
    int x = 0;

    ck_assert_errno(usock_hub_post(NULL, nothing, &x), EINVAL);
    ck_assert_errno(usock_hub_post(h, NULL, &x), EINVAL);
    ck_assert_ok(usock_hub_post(h, nothing, &x));
    ck_assert_ok(usock_run());
    ck_assert_ok(usock_hub_shutdown(h));
    ck_assert_errno(usock_hub_post(h, nothing, &x), ESHUTDOWN);
}
END_TEST

/* ---- usock_hub_shutdown ------------------------------------------------- */

struct blocked {
    usock_t *sock;    /* NULL: usock_sleep(60) */
    int rc, err, done;
    double took;
};

static int started;

static void blocked_task(void *arg)
{
    struct blocked *b = arg;
    double t0 = usock_now();
    char buf[8];

    __atomic_add_fetch(&started, 1, __ATOMIC_RELEASE);
    errno = 0;
    if (b->sock == NULL) {
        b->rc = usock_sleep(60);
    } else {
        b->rc = (int)usock_recv(b->sock, buf, sizeof buf);
    }
    b->err = errno;
    b->took = usock_now() - t0;
    b->done = 1;
}

struct killer {
    usock_hub_t *h;
    int want, rc, err, saw;
};

/* Wait (bounded) until every task is blocked, then shut the hub down. */
static void *killer_thread(void *arg)
{
    struct killer *k = arg;

    for (int i = 0; i < 500; i++) {
        k->saw = __atomic_load_n(&started, __ATOMIC_ACQUIRE);
        if (k->saw >= k->want) {
            break;
        }
        nap(0.01);
    }
    nap(0.05);
    errno = 0;
    k->rc = usock_hub_shutdown(k->h);
    k->err = errno;
    return NULL;
}

static void spawn_blocked(struct blocked *b, usock_t **c, usock_t **s)
{
    for (int i = 0; i < NBLOCKED; i++) {
        b[i] = (struct blocked){.rc = -2};
        if (i % 2) {
            test_pair(&c[i / 2], &s[i / 2]);
            b[i].sock = c[i / 2];
        }
        ck_assert_int_gt(usock_spawn(blocked_task, &b[i]), 0);
    }
}

START_TEST(shutdown_from_other_thread)
{
    static struct blocked b[NBLOCKED];
    static usock_t *c[NBLOCKED / 2], *s[NBLOCKED / 2];
    struct killer k = {.want = NBLOCKED};
    pthread_t th;

    started = 0;
    k.h = ck_assert_nonnull(usock_hub_self());
    spawn_blocked(b, c, s);
    ck_assert_int_eq(pthread_create(&th, NULL, killer_thread, &k), 0);
    double t0 = usock_now();
    ck_assert_ok(usock_run());
    ck_assert_duration(t0, 0, 5.0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(k.saw, NBLOCKED);
    ck_assert_msg(k.rc == 0, "shutdown: %s", test_errname(k.err));
    for (int i = 0; i < NBLOCKED; i++) {
        ck_assert_msg(b[i].done && b[i].rc == -1 && b[i].err == ECANCELED,
                      "task %d (%s): done %d rc %d %s", i,
                      b[i].sock ? "recv" : "sleep", b[i].done, b[i].rc,
                      test_errname(b[i].err));
        ck_assert_msg(b[i].took < 5.0, "task %d took %.3f s", i, b[i].took);
    }
    for (int i = 0; i < NBLOCKED / 2; i++) {
        usock_close(c[i]);
        usock_close(s[i]);
    }
}
END_TEST

/* After shutdown, new tasks start cancelled; usock_run still returns. */
START_TEST(shutdown_then_spawn)
{
    usock_hub_t *h = ck_assert_nonnull(usock_hub_self());
    struct blocked b = {.rc = -2};
    usock_t *c, *s;

    ck_assert_errno(usock_hub_shutdown(NULL), EINVAL);
    test_pair(&c, &s);
    ck_assert_ok(usock_hub_shutdown(h));
    b.sock = c;
    ck_assert_int_gt(usock_spawn(blocked_task, &b), 0);
    struct blocked b2 = {.rc = -2};
    ck_assert_int_gt(usock_spawn(blocked_task, &b2), 0);
    double t0 = usock_now();
    ck_assert_ok(usock_run());
    ck_assert_duration(t0, 0, 1.0);
    ck_assert(b.done && b2.done);
    ck_assert_int_eq(b.rc, -1);
    ck_assert_str_eq(test_errname(b.err), "ECANCELED");
    ck_assert_int_eq(b2.rc, -1);
    ck_assert_str_eq(test_errname(b2.err), "ECANCELED");
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- thread exit -------------------------------------------------------- */

static int finished;

static void short_task(void *arg)
{
    (void)arg;
    if (usock_sleep(0.001) == 0) {
        __atomic_add_fetch(&finished, 1, __ATOMIC_RELAXED);
    }
}

static void *spawning_thread(void *arg)
{
    (void)arg;
    if (usock_spawn(short_task, NULL) > 0) {
        usock_run();
    }
    return NULL;
}

START_TEST(thread_exit_frees_hub)
{
    int base = count_fds();

    finished = 0;
    ck_assert_int_gt(base, 0);
    for (int i = 0; i < NTHREADS; i++) {
        pthread_t th;

        ck_assert_int_eq(pthread_create(&th, NULL, spawning_thread, NULL), 0);
        ck_assert_int_eq(pthread_join(th, NULL), 0);
    }
    ck_assert_int_eq(finished, NTHREADS);
    ck_assert_int_eq(count_fds(), base);
}
END_TEST

static void add_hub_tests(TCase *tc)
{
    tcase_add_test(tc, hub_self_per_thread);
    tcase_add_test(tc, post_from_other_thread);
    tcase_add_test(tc, post_errors);
    tcase_add_test(tc, shutdown_from_other_thread);
    tcase_add_test(tc, shutdown_then_spawn);
    tcase_add_test(tc, thread_exit_frees_hub);
}

/* ---- embedding in a daemon's ev_loop ------------------------------------ */

#ifdef HAVE_LIBEV

static struct ev_loop *embed(void)
{
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    ck_assert_ok(usock_hub_use_ev_loop(loop));
    return loop;
}

struct echo {
    usock_t *l;
    usock_addr_t a;
    int server_done, client_done;
    char got[64];
};

static void echo_server(void *arg)
{
    struct echo *e = arg;
    char line[64];
    usock_t *c = usock_accept(e->l, NULL);

    if (c != NULL) {
        usock_settimeout(c, 5.0);
        ssize_t n = usock_readline(c, line, sizeof line);
        if (n > 0 && usock_sendall(c, line, (size_t)n) == 0) {
            e->server_done = 1;
        }
        usock_close(c);
    }
}

static void echo_client(void *arg)
{
    struct echo *e = arg;
    usock_t *s = usock_socket(AF_INET, SOCK_STREAM, 0);

    if (s == NULL) {
        return;
    }
    usock_settimeout(s, 5.0);
    if (usock_connect(s, &e->a) == 0 &&
        usock_sendall(s, "hello embed\n", 12) == 0 &&
        usock_readline(s, e->got, sizeof e->got) > 0) {
        e->client_done = 1;
    }
    usock_close(s);
}

START_TEST(embed_echo)
{
    struct ev_loop *loop = embed();
    struct echo e = {0};

    e.l = test_listener(&e.a);
    ck_assert_ok(usock_settimeout(e.l, 5.0));
    ck_assert_int_gt(usock_spawn(echo_server, &e), 0);
    ck_assert_int_gt(usock_spawn(echo_client, &e), 0);
    double t0 = usock_now();
    ev_run(loop, 0); /* returns once the usocket work is done */
    ck_assert_duration(t0, 0, 5.0);
    ck_assert(e.server_done);
    ck_assert(e.client_done);
    ck_assert_str_eq(e.got, "hello embed\n");
    usock_close(e.l);
}
END_TEST

/* ev_run must not return while a task still sleeps on the hub. */
static void late_task(void *arg)
{
    if (usock_sleep(0.1) == 0) {
        *(int *)arg = 1;
    }
}

START_TEST(embed_run_waits_for_sleeper)
{
    struct ev_loop *loop = embed();
    int done = 0;

    ck_assert_int_gt(usock_spawn(late_task, &done), 0);
    double t0 = usock_now();
    ev_run(loop, 0);
    ck_assert_msg(done, "ev_run returned after %.3f s with a task asleep",
                  usock_now() - t0);
    ck_assert_duration(t0, 0.1, 1.0);
}
END_TEST

struct counter {
    int count, stop, done;
};

static void counting_task(void *arg)
{
    struct counter *k = arg;

    for (int i = 0; i < 1000 && !k->stop; i++) {
        if (usock_sleep(0.01) != 0) {
            break;
        }
        k->count++;
    }
    k->done = 1;
}

/* A blocking call of the thread's own code runs the daemon's loop. */
START_TEST(embed_main_blocking_call)
{
    struct counter k = {0};

    embed();
    ck_assert_int_gt(usock_spawn(counting_task, &k), 0);
    double t0 = usock_now();
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_duration(t0, 0.05, 1.0);
    ck_assert_int_ge(k.count, 1);
    int before = k.count;
    t0 = usock_now();
    ck_assert_ok(usock_sleep(0.2));
    ck_assert_duration(t0, 0.2, 1.0);
    ck_assert_int_ge(k.count, before + 3);
    k.stop = 1;
    ck_assert_ok(usock_run());
    ck_assert(k.done);
}
END_TEST

struct daemon_timer {
    ev_timer w;
    int ticks, task_done, ticks_start, ticks_end;
    usock_t *c, *s;
};

static void daemon_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct daemon_timer *d = (struct daemon_timer *)w;

    (void)revents;
    d->ticks++;
    if (d->task_done || d->ticks > 1000) {
        ev_timer_stop(loop, w);
    }
}

static void busy_task(void *arg)
{
    struct daemon_timer *d = arg;
    char b;

    d->ticks_start = d->ticks;
    for (int i = 0; i < 20; i++) {
        usock_sleep(0.01);
        usock_sendall(d->c, "x", 1);
        usock_recv(d->s, &b, 1);
    }
    d->ticks_end = d->ticks;
    d->task_done = 1;
}

/* The daemon's own watchers keep working while tasks run. */
START_TEST(embed_daemon_timer_fires)
{
    struct ev_loop *loop = embed();
    struct daemon_timer d = {0};

    test_pair(&d.c, &d.s);
    ev_timer_init(&d.w, daemon_tick, 0.01, 0.01);
    ev_timer_start(loop, &d.w);
    ck_assert_int_gt(usock_spawn(busy_task, &d), 0);
    double t0 = usock_now();
    ev_run(loop, 0);
    ck_assert_duration(t0, 0.2, 5.0);
    ck_assert(d.task_done);
    ck_assert_msg(d.ticks_end - d.ticks_start >= 5,
                  "the daemon's timer ticked %d times during the task",
                  d.ticks_end - d.ticks_start);
    usock_close(d.c);
    usock_close(d.s);
}
END_TEST

START_TEST(embed_errors)
{
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    ck_assert_errno(usock_hub_use_ev_loop(NULL), EINVAL);
    ck_assert_ok(usock_hub_use_ev_loop(loop));
    ck_assert_errno(usock_hub_use_ev_loop(loop), EBUSY);
}
END_TEST

START_TEST(embed_after_other_call)
{
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    ck_assert_int_gt(usock_self(), 0);
    ck_assert_errno(usock_hub_use_ev_loop(loop), EBUSY);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(embed_poll_reactor)
{
    struct ev_loop *loop = ev_loop_new(0);

    ck_assert_ptr_nonnull(loop);
    setenv("USOCKET_REACTOR", "poll", 1);
    ck_assert_errno(usock_hub_use_ev_loop(loop), ENOTSUP);
    /* Nothing was set up: the hub works normally afterwards. */
    ck_assert_int_gt(usock_spawn(nothing, NULL), 0);
    ck_assert_ok(usock_run());
    ev_loop_destroy(loop);
}
END_TEST

static void embed_setup(void)
{
    setenv("USOCKET_REACTOR", "ev", 1);
}

static void add_embed_tcase(Suite *s)
{
    TCase *tc = tcase_create("embed");

    tcase_add_checked_fixture(tc, embed_setup, NULL);
    tcase_add_test(tc, embed_echo);
    tcase_add_test(tc, embed_run_waits_for_sleeper);
    tcase_add_test(tc, embed_main_blocking_call);
    tcase_add_test(tc, embed_daemon_timer_fires);
    tcase_add_test(tc, embed_errors);
    tcase_add_test(tc, embed_after_other_call);
    tcase_add_test(tc, embed_poll_reactor);
    tcase_set_timeout(tc, 20);
    suite_add_tcase(s, tc);
}

#endif /* HAVE_LIBEV */

static Suite *hub_suite(void)
{
    Suite *s = suite_create("hub");

    add_reactor_tcases(s, "hub", add_hub_tests, 30);
#ifdef HAVE_LIBEV
    add_embed_tcase(s);
#endif
    return s;
}

int main(void)
{
    return test_main(hub_suite());
}
