/*
 * Suite "poll": usock_poll over many sockets (MicroPython's uselect.poll):
 * timeouts, readiness per entry, the socket's own read buffer, peer close,
 * NULL entries, bad arguments, task deadline, cancel, close while polled,
 * the held read slot, large sets and plain threads without tasks.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"

#define NPAIRS 3
#define MANY 100
#define MANY_READY 57

/* One usock_poll run in its own task, and its outcome. */
struct poll_op {
    struct usock_pollfd *fds;
    size_t n;
    double timeout;
    int rc, err, done;
    double took;
};

static void poll_task(void *arg)
{
    struct poll_op *op = arg;
    double t0 = usock_now();

    errno = 0;
    op->rc = usock_poll(op->fds, op->n, op->timeout);
    op->err = op->rc < 0 ? errno : 0;
    op->took = usock_now() - t0;
    op->done = 1;
}

static int spawn_poll(struct poll_op *op, struct usock_pollfd *fds, size_t n,
                      double timeout)
{
    int id;

    *op = (struct poll_op){.fds = fds, .n = n, .timeout = timeout, .rc = -2};
    id = usock_spawn(poll_task, op);
    ck_assert_int_gt(id, 0);
    return id;
}

/* Let the other tasks run until *flag is set, for at most `limit` s. */
static void wait_flag(const int *flag, double limit)
{
    double end = usock_now() + limit * test_mult();

    while (!*flag && usock_now() < end) {
        usock_sleep(0.001);
    }
    ck_assert_msg(*flag, "not done within %.3f s", limit * test_mult());
}

/* n connected pairs; fds[i] polls c[i] for `events`. */
static void make_pairs(size_t n, usock_t **c, usock_t **s,
                       struct usock_pollfd *fds, short events)
{
    for (size_t i = 0; i < n; i++) {
        test_pair(&c[i], &s[i]);
        fds[i] = (struct usock_pollfd){.sock = c[i], .events = events,
                                       .revents = 0x55};
    }
}

static void close_pairs(size_t n, usock_t **c, usock_t **s)
{
    for (size_t i = 0; i < n; i++) {
        ck_assert_ok(usock_close(c[i]));
        ck_assert_ok(usock_close(s[i]));
    }
}

/* Wait (bounded) until the kernel holds `want` bytes for s. */
static void wait_kernel_bytes(usock_t *s, size_t want)
{
    char tmp[64];
    double end = usock_now() + 5.0;
    ssize_t r = -1;

    while (usock_now() < end) {
        r = recv(usock_fileno(s), tmp, sizeof tmp, MSG_PEEK | MSG_DONTWAIT);
        if (r >= (ssize_t)want) {
            return;
        }
        usock_sleep(0.001);
    }
    ck_abort_msg("only %zd of %zu bytes arrived", r, want);
}

/* ---- timeouts and readiness --------------------------------------------- */

START_TEST(none_ready_times_out)
{
    usock_t *c[NPAIRS], *s[NPAIRS];
    struct usock_pollfd fds[NPAIRS];

    make_pairs(NPAIRS, c, s, fds, POLLIN);
    double t0 = usock_now();
    ck_assert_count(usock_poll(fds, NPAIRS, 0.1), 0);
    ck_assert_duration(t0, 0.1, 0.5);
    for (int i = 0; i < NPAIRS; i++) {
        ck_assert_int_eq(fds[i].revents, 0);
    }
    close_pairs(NPAIRS, c, s);
}
END_TEST

START_TEST(exactly_the_ready_entry)
{
    usock_t *c[NPAIRS], *s[NPAIRS];
    struct usock_pollfd fds[NPAIRS];

    make_pairs(NPAIRS, c, s, fds, POLLIN);
    ck_assert_ok(usock_sendall(s[1], "x", 1));
    double t0 = usock_now();
    ck_assert_count(usock_poll(fds, NPAIRS, 5.0), 1);
    ck_assert_duration(t0, 0, 0.5);
    ck_assert_int_eq(fds[0].revents, 0);
    ck_assert_int_eq(fds[1].revents & POLLIN, POLLIN);
    ck_assert_int_eq(fds[2].revents, 0);
    close_pairs(NPAIRS, c, s);
}
END_TEST

START_TEST(pollout_is_immediate)
{
    usock_t *c, *s;
    struct usock_pollfd fd;

    test_pair(&c, &s);
    fd = (struct usock_pollfd){.sock = c, .events = POLLOUT};
    double t0 = usock_now();
    ck_assert_count(usock_poll(&fd, 1, USOCK_NONE), 1);
    ck_assert_duration(t0, 0, 0.1);
    ck_assert_int_eq(fd.revents, POLLOUT);
    fd.revents = 0;
    ck_assert_count(usock_poll(&fd, 1, 0), 1);
    ck_assert_int_eq(fd.revents, POLLOUT);
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(timeout_zero_never_blocks)
{
    usock_t *c[NPAIRS], *s[NPAIRS];
    struct usock_pollfd fds[NPAIRS];

    make_pairs(NPAIRS, c, s, fds, POLLIN);
    double t0 = usock_now();
    for (int i = 0; i < 100; i++) {
        ck_assert_count(usock_poll(fds, NPAIRS, 0), 0);
    }
    ck_assert_duration(t0, 0, 0.1);
    ck_assert_count(usock_poll(NULL, 0, 0), 0);
    close_pairs(NPAIRS, c, s);
}
END_TEST

START_TEST(forever_waits_for_data)
{
    usock_t *c[NPAIRS], *s[NPAIRS];
    struct usock_pollfd fds[NPAIRS];

    make_pairs(NPAIRS, c, s, fds, POLLIN);
    test_send_after(s[2], 0.05, "late", 4);
    double t0 = usock_now();
    ck_assert_count(usock_poll(fds, NPAIRS, USOCK_NONE), 1);
    ck_assert_duration(t0, 0.05, 1.0);
    ck_assert_int_eq(fds[0].revents | fds[1].revents, 0);
    ck_assert_int_eq(fds[2].revents & POLLIN, POLLIN);
    close_pairs(NPAIRS, c, s);
}
END_TEST

/* Bytes in the socket's own buffer count as POLLIN, kernel or not. */
START_TEST(own_buffer_is_pollin)
{
    usock_t *c, *s;
    struct usock_pollfd fd;
    char line[16], tmp[4];

    test_pair(&c, &s);
    ck_assert_ok(usock_sendall(s, "a\nb", 3));
    wait_kernel_bytes(c, 3);
    ck_assert_count(usock_readline(c, line, sizeof line), 2);
    ck_assert_str_eq(line, "a\n");
    /* The "b" is in c's buffer, not in the kernel. */
    ck_assert_errno(recv(usock_fileno(c), tmp, 1, MSG_PEEK | MSG_DONTWAIT),
                    EAGAIN);
    fd = (struct usock_pollfd){.sock = c, .events = POLLIN};
    ck_assert_count(usock_poll(&fd, 1, 0), 1);
    ck_assert_int_eq(fd.revents, POLLIN);
    double t0 = usock_now();
    fd.revents = 0;
    ck_assert_count(usock_poll(&fd, 1, 5.0), 1);
    ck_assert_duration(t0, 0, 0.1);
    ck_assert_int_eq(fd.revents, POLLIN);
    ck_assert_count(usock_recv(c, tmp, sizeof tmp), 1);
    ck_assert_int_eq(tmp[0], 'b');
    /* Drained: no longer ready. */
    ck_assert_count(usock_poll(&fd, 1, 0), 0);
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(peer_close_is_reported)
{
    usock_t *c, *s;
    struct usock_pollfd fd;
    char tmp[4];

    test_pair(&c, &s);
    fd = (struct usock_pollfd){.sock = c, .events = POLLIN};
    ck_assert_count(usock_poll(&fd, 1, 0), 0);
    ck_assert_ok(usock_close(s));
    ck_assert_count(usock_poll(&fd, 1, 5.0), 1);
    ck_assert_msg(fd.revents & (POLLIN | POLLHUP), "revents %#x",
                  (unsigned)fd.revents);
    ck_assert_count(usock_recv(c, tmp, sizeof tmp), 0);
    usock_close(c);
}
END_TEST

START_TEST(peer_close_wakes_a_waiting_poll)
{
    usock_t *c, *s;
    struct usock_pollfd fd;

    test_pair(&c, &s);
    fd = (struct usock_pollfd){.sock = c, .events = POLLIN};
    test_send_after(s, 0.05, NULL, 0); /* shutdown(SHUT_WR) */
    double t0 = usock_now();
    ck_assert_count(usock_poll(&fd, 1, 5.0), 1);
    ck_assert_duration(t0, 0.05, 1.0);
    ck_assert_msg(fd.revents & (POLLIN | POLLHUP), "revents %#x",
                  (unsigned)fd.revents);
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(null_entries_ignored)
{
    usock_t *c, *s;
    struct usock_pollfd fds[3];

    test_pair(&c, &s);
    fds[0] = (struct usock_pollfd){.sock = NULL, .events = POLLIN | POLLOUT,
                                   .revents = 0x7f};
    fds[1] = (struct usock_pollfd){.sock = c, .events = POLLIN};
    fds[2] = (struct usock_pollfd){.sock = NULL, .events = POLLIN,
                                   .revents = 0x7f};
    /* Only NULL entries and a silent socket: a plain timeout. */
    double t0 = usock_now();
    ck_assert_count(usock_poll(fds, 3, 0.05), 0);
    ck_assert_duration(t0, 0.05, 0.5);
    ck_assert_int_eq(fds[0].revents | fds[1].revents | fds[2].revents, 0);
    test_send_after(s, 0.02, "z", 1);
    ck_assert_count(usock_poll(fds, 3, 5.0), 1);
    ck_assert_int_eq(fds[0].revents, 0);
    ck_assert_int_eq(fds[1].revents, POLLIN);
    ck_assert_int_eq(fds[2].revents, 0);
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(bad_arguments)
{
    usock_t *c, *s;
    struct usock_pollfd fd;

    test_pair(&c, &s);
    fd = (struct usock_pollfd){.sock = c, .events = POLLIN};
    ck_assert_errno(usock_poll(NULL, 1, 0), EINVAL);
    ck_assert_errno(usock_poll(NULL, 2, 0.1), EINVAL);
    ck_assert_errno(usock_poll(&fd, 1, -0.5), EINVAL);
    ck_assert_errno(usock_poll(&fd, 1, -2.0), EINVAL);
    ck_assert_errno(usock_poll(&fd, 1, -1e-9), EINVAL);
    ck_assert_errno(usock_poll(&fd, 1, NAN), EINVAL);
    ck_assert_errno(usock_poll(&fd, 1, INFINITY), EINVAL);
    ck_assert_errno(usock_poll(&fd, 1, -INFINITY), EINVAL);
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- deadline, cancel, close, busy slot --------------------------------- */

/* The three deadline cases: forever poll, poll timeout after the
 * deadline (both ETIMEDOUT) and poll timeout before it (0). */
struct dl_case {
    usock_t *c;
    int rc[3], err[3], done;
    double took[3];
};

static void deadline_cases(struct dl_case *d)
{
    static const double timeout[3] = {USOCK_NONE, 3.0, 0.1};
    static const double deadline[3] = {0.1, 0.1, 5.0};
    struct usock_pollfd fd = {.sock = d->c, .events = POLLIN};

    for (int i = 0; i < 3; i++) {
        double t0 = usock_now();
        usock_setdeadline(usock_now() + deadline[i]);
        errno = 0;
        d->rc[i] = usock_poll(&fd, 1, timeout[i]);
        d->err[i] = errno;
        d->took[i] = usock_now() - t0;
        usock_setdeadline(USOCK_NONE);
    }
    d->done = 1;
}

static void deadline_task(void *arg)
{
    deadline_cases(arg);
}

static void check_deadline_cases(const struct dl_case *d)
{
    for (int i = 0; i < 3; i++) {
        int want = i < 2 ? -1 : 0;
        ck_assert_msg(d->rc[i] == want && (want == 0 || d->err[i] == ETIMEDOUT),
                      "case %d: expected %d%s, got %d %s", i, want,
                      want ? " ETIMEDOUT" : "", d->rc[i],
                      test_errname(d->err[i]));
        ck_assert_msg(d->took[i] >= 0.1 && d->took[i] <= 0.5 * test_mult(),
                      "case %d took %.3f s", i, d->took[i]);
    }
}

/* In the thread's own context, before any task exists. */
START_TEST(task_deadline_ends_poll_main)
{
    usock_t *c, *s;
    struct dl_case d = {0};

    test_pair(&c, &s);
    d.c = c;
    deadline_cases(&d);
    check_deadline_cases(&d);
    usock_close(c);
    usock_close(s);
}
END_TEST

/* In a spawned task. */
START_TEST(task_deadline_ends_poll_task)
{
    usock_t *c, *s;
    struct dl_case d = {0};

    test_pair(&c, &s);
    d.c = c;
    ck_assert_int_gt(usock_spawn(deadline_task, &d), 0);
    wait_flag(&d.done, 5.0);
    check_deadline_cases(&d);
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(cancel_wakes_poll)
{
    usock_t *c, *s;
    struct usock_pollfd fd;
    struct poll_op op;

    test_pair(&c, &s);
    fd = (struct usock_pollfd){.sock = c, .events = POLLIN};
    int id = spawn_poll(&op, &fd, 1, USOCK_NONE);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_int_eq(op.done, 0);
    double t0 = usock_now();
    ck_assert_ok(usock_cancel(id));
    wait_flag(&op.done, 2.0);
    ck_assert_duration(t0, 0, 0.2);
    ck_assert_int_eq(op.rc, -1);
    ck_assert_str_eq(test_errname(op.err), "ECANCELED");
    /* The slot was given back: a read on c works. */
    char b;
    ck_assert_ok(usock_sendall(s, "q", 1));
    ck_assert_count(usock_recv(c, &b, 1), 1);
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(close_while_polled_is_pollnval)
{
    usock_t *c[2], *s[2];
    struct usock_pollfd fds[2];
    struct poll_op op;

    make_pairs(2, c, s, fds, POLLIN);
    spawn_poll(&op, fds, 2, 5.0);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_int_eq(op.done, 0);
    double t0 = usock_now();
    ck_assert_ok(usock_close(c[0])); /* never touched again */
    wait_flag(&op.done, 2.0);
    ck_assert_duration(t0, 0, 0.2);
    ck_assert_count(op.rc, 1);
    ck_assert_int_eq(fds[0].revents, POLLNVAL);
    ck_assert_int_eq(fds[1].revents, 0);
    usock_close(s[0]);
    usock_close(c[1]);
    usock_close(s[1]);
}
END_TEST

START_TEST(polled_read_slot_is_busy)
{
    usock_t *c, *s;
    struct usock_pollfd fd;
    struct poll_op op;
    char b[4];

    test_pair(&c, &s);
    fd = (struct usock_pollfd){.sock = c, .events = POLLIN};
    spawn_poll(&op, &fd, 1, 5.0);
    ck_assert_ok(usock_yield());
    ck_assert_int_eq(op.done, 0);
    ck_assert_errno(usock_recv(c, b, sizeof b), EBUSY);
    ck_assert_errno(usock_readline(c, b, sizeof b), EBUSY);
    ck_assert_int_eq(op.done, 0);
    ck_assert_ok(usock_sendall(s, "r", 1));
    wait_flag(&op.done, 2.0);
    ck_assert_count(op.rc, 1);
    ck_assert_int_eq(fd.revents, POLLIN);
    /* Released after the poll: the read works now. */
    ck_assert_count(usock_recv(c, b, sizeof b), 1);
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- large sets and plain threads --------------------------------------- */

START_TEST(more_than_sixteen)
{
    static usock_t *c[MANY], *s[MANY];
    static struct usock_pollfd fds[MANY];

    ck_assert_ok(raise_nofile(4 * MANY + 64));
    make_pairs(MANY, c, s, fds, POLLIN);
    double t0 = usock_now();
    ck_assert_count(usock_poll(fds, MANY, 0.05), 0);
    ck_assert_duration(t0, 0.05, 0.5);
    test_send_after(s[MANY_READY], 0.05, "!", 1);
    t0 = usock_now();
    ck_assert_count(usock_poll(fds, MANY, USOCK_NONE), 1);
    ck_assert_duration(t0, 0.05, 1.0);
    for (int i = 0; i < MANY; i++) {
        ck_assert_msg(fds[i].revents == (i == MANY_READY ? POLLIN : 0),
                      "entry %d: revents %#x", i, (unsigned)fds[i].revents);
    }
    /* Already ready: found by the first scan. */
    ck_assert_count(usock_poll(fds, MANY, 0), 1);
    ck_assert_int_eq(fds[MANY_READY].revents, POLLIN);
    close_pairs(MANY, c, s);
}
END_TEST

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

struct plain {
    usock_t *c;
    int rc_timeout, rc_wait, revents, err, fds_before, fds_after;
    double took_timeout, took_wait;
};

/* A thread that never spawns: its polls are direct poll(2) calls. */
static void *plain_thread(void *arg)
{
    struct plain *p = arg;
    struct usock_pollfd fd = {.sock = p->c, .events = POLLIN};
    double t0;

    p->fds_before = count_fds();
    t0 = usock_now();
    p->rc_timeout = usock_poll(&fd, 1, 0.1);
    p->took_timeout = usock_now() - t0;
    t0 = usock_now();
    errno = 0;
    p->rc_wait = usock_poll(&fd, 1, USOCK_NONE);
    p->err = errno;
    p->took_wait = usock_now() - t0;
    p->revents = fd.revents;
    p->fds_after = count_fds();
    return NULL;
}

START_TEST(plain_pthread_poll)
{
    usock_t *c, *s;
    struct plain p = {0};
    pthread_t th;
    struct timespec ts = {0, 300 * 1000000};

    test_pair(&c, &s);
    p.c = c;
    ck_assert_int_eq(pthread_create(&th, NULL, plain_thread, &p), 0);
    nanosleep(&ts, NULL); /* no task here either: a plain sleep */
    ck_assert_ok(usock_sendall(s, "p", 1));
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(p.rc_timeout, 0);
    ck_assert_msg(p.took_timeout >= 0.1 && p.took_timeout < 0.3 * test_mult(),
                  "timeout poll took %.3f s", p.took_timeout);
    ck_assert_msg(p.rc_wait == 1, "poll: %d %s", p.rc_wait,
                  test_errname(p.err));
    ck_assert_int_eq(p.revents, POLLIN);
    ck_assert_msg(p.took_wait >= 0.1, "waited %.3f s", p.took_wait);
    /* No reactor was made for the plain thread. */
    ck_assert_int_eq(p.fds_after, p.fds_before);
    usock_close(c);
    usock_close(s);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, none_ready_times_out);
    tcase_add_test(tc, exactly_the_ready_entry);
    tcase_add_test(tc, pollout_is_immediate);
    tcase_add_test(tc, timeout_zero_never_blocks);
    tcase_add_test(tc, forever_waits_for_data);
    tcase_add_test(tc, own_buffer_is_pollin);
    tcase_add_test(tc, peer_close_is_reported);
    tcase_add_test(tc, peer_close_wakes_a_waiting_poll);
    tcase_add_test(tc, null_entries_ignored);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, task_deadline_ends_poll_main);
    tcase_add_test(tc, task_deadline_ends_poll_task);
    tcase_add_test(tc, cancel_wakes_poll);
    tcase_add_test(tc, close_while_polled_is_pollnval);
    tcase_add_test(tc, polled_read_slot_is_busy);
    tcase_add_test(tc, more_than_sixteen);
    tcase_add_test(tc, plain_pthread_poll);
}

static Suite *poll_suite(void)
{
    Suite *s = suite_create("poll");

    add_reactor_tcases(s, "poll", add_tests, 30);
    return s;
}

int main(void)
{
    return test_main(poll_suite());
}
