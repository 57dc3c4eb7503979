/*
 * Suite "chan": conditions and channels.  Every case runs its body inside a
 * task, so waits really park on the reactor (both reactors): FIFO order and
 * exactly-once delivery, capacity 0, each timeout mode, close and free,
 * cancel and deadline during a wait, a timeout racing a hand-off, tasks of
 * several hubs and plain threads sharing one channel, and every errno of
 * DESIGN.md's decided details.
 */
#include "config.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <usocket.h>

#include "helpers.h"

/* ---- running a case in a task ------------------------------------------- */

static int body_done;

struct body {
    void (*fn)(void);
};

static void body_task(void *arg)
{
    ((struct body *)arg)->fn();
    body_done = 1;
}

/* Run fn inside a task and wait for every task to finish. */
static void in_task(void (*fn)(void))
{
    struct body b = {fn};

    body_done = 0;
    ck_assert_int_gt(usock_spawn(body_task, &b), 0);
    ck_assert_ok(usock_run());
    ck_assert_msg(body_done, "the task did not finish");
}

/* Channel operations run by their own task, with their outcome. */
struct op {
    usock_chan_t *ch;
    usock_cond_t *c;
    double timeout;
    int send;       /* 1: send `val`; 0: receive into `val` */
    long val;
    int rc, err, done;
    double took;
};

static void op_task(void *arg)
{
    struct op *o = arg;
    double t0 = usock_now();

    errno = 0;
    if (o->c) {
        o->rc = usock_cond_wait(o->c, o->timeout);
    } else if (o->send) {
        o->rc = usock_chan_send(o->ch, &o->val, o->timeout);
    } else {
        o->rc = usock_chan_recv(o->ch, &o->val, o->timeout);
    }
    o->err = o->rc ? errno : 0;
    o->took = usock_now() - t0;
    o->done = 1;
}

static int spawn_op(struct op *o)
{
    int id;

    o->done = 0;
    id = usock_spawn(op_task, o);
    ck_assert_int_gt(id, 0);
    return id;
}

/* Let the other tasks run until they are all blocked (a few rounds). */
static void settle(void)
{
    for (int i = 0; i < 5; i++) {
        ck_assert_ok(usock_yield());
    }
}

/* ---- the decided details: errno ---------------------------------------- */

static void errors_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 1));
    usock_cond_t *c = ck_assert_nonnull(usock_cond_new());
    long v = 1;
    const double bad[] = {-2.0, -0.5, NAN, INFINITY, -INFINITY};

    ck_assert_errno_null(usock_chan_new(0, 4), EINVAL);
    ck_assert_errno_null(usock_chan_new(0, 0), EINVAL);
    ck_assert_errno_null(usock_chan_new(SIZE_MAX / 2, 4), ENOMEM);
    ck_assert_errno(usock_chan_send(NULL, &v, 0), EINVAL);
    ck_assert_errno(usock_chan_send(ch, NULL, 0), EINVAL);
    ck_assert_errno(usock_chan_recv(NULL, &v, 0), EINVAL);
    ck_assert_errno(usock_chan_recv(ch, NULL, 0), EINVAL);
    ck_assert_errno(usock_chan_close(NULL), EINVAL);
    ck_assert_errno(usock_cond_wait(NULL, 0), EINVAL);
    ck_assert_errno(usock_cond_wait(NULL, USOCK_NONE), EINVAL);
    ck_assert_errno(usock_cond_signal(NULL), EINVAL);
    ck_assert_errno(usock_cond_broadcast(NULL), EINVAL);
    ck_assert_uint_eq(usock_chan_len(NULL), 0);
    usock_chan_free(NULL);
    usock_cond_free(NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double t0 = usock_now();
        /* Invalid timeouts fail before any wait, whatever the state. */
        ck_assert_errno(usock_cond_wait(c, bad[i]), EINVAL);
        ck_assert_errno(usock_chan_recv(ch, &v, bad[i]), EINVAL);
        ck_assert_ok(usock_chan_send(ch, &v, 0));
        ck_assert_errno(usock_chan_send(ch, &v, bad[i]), EINVAL);
        ck_assert_ok(usock_chan_recv(ch, &v, 0));
        ck_assert_duration(t0, 0, 0.05);
    }
    /* Timeout 0 never waits. */
    ck_assert_errno(usock_cond_wait(c, 0), EAGAIN);
    ck_assert_errno(usock_chan_recv(ch, &v, 0), EAGAIN);
    ck_assert_ok(usock_chan_send(ch, &v, 0));
    ck_assert_errno(usock_chan_send(ch, &v, 0), EAGAIN);
    ck_assert_uint_eq(usock_chan_len(ch), 1);
    /* Closed: sends EPIPE whatever the timeout; drain, then EPIPE. */
    ck_assert_ok(usock_chan_close(ch));
    ck_assert_errno(usock_chan_close(ch), EPIPE);
    ck_assert_errno(usock_chan_send(ch, &v, 0), EPIPE);
    ck_assert_errno(usock_chan_send(ch, &v, USOCK_NONE), EPIPE);
    ck_assert_errno(usock_chan_send(ch, &v, 1.0), EPIPE);
    v = 0;
    ck_assert_ok(usock_chan_recv(ch, &v, 0));
    ck_assert_int_eq(v, 1);
    ck_assert_errno(usock_chan_recv(ch, &v, 0), EPIPE);
    ck_assert_errno(usock_chan_recv(ch, &v, USOCK_NONE), EPIPE);
    ck_assert_errno(usock_chan_recv(ch, &v, 1.0), EPIPE);
    /* Signals with nobody waiting succeed and are not remembered. */
    ck_assert_ok(usock_cond_signal(c));
    ck_assert_ok(usock_cond_broadcast(c));
    ck_assert_errno(usock_cond_wait(c, 0), EAGAIN);
    ck_assert_errno(usock_cond_wait(c, 0.05), ETIMEDOUT);
    usock_chan_free(ch);
    usock_cond_free(c);
}

START_TEST(errors)
{
    in_task(errors_body);
}
END_TEST

/* ---- FIFO and buffering ------------------------------------------------ */

static void buffered_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 4));
    long v;

    for (int round = 0; round < 3; round++) { /* wraps the ring */
        for (long i = 0; i < 4; i++) {
            v = round * 10 + i;
            ck_assert_ok(usock_chan_send(ch, &v, 0));
            ck_assert_uint_eq(usock_chan_len(ch), (size_t)i + 1);
        }
        ck_assert_errno(usock_chan_send(ch, &v, 0), EAGAIN);
        for (long i = 0; i < 3; i++) {
            ck_assert_ok(usock_chan_recv(ch, &v, USOCK_NONE));
            ck_assert_int_eq(v, round * 10 + i);
        }
        ck_assert_ok(usock_chan_recv(ch, &v, 1.0));
        ck_assert_int_eq(v, round * 10 + 3);
        ck_assert_uint_eq(usock_chan_len(ch), 0);
    }
    usock_chan_free(ch);
}

START_TEST(buffered_fifo)
{
    in_task(buffered_body);
}
END_TEST

/* Items of arbitrary size are copied whole. */
struct big {
    char bytes[1000];
};

static void big_items_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(struct big), 2));
    struct big a, b;

    for (int i = 0; i < 5; i++) {
        memset(&a, 'a' + i, sizeof a);
        ck_assert_ok(usock_chan_send(ch, &a, 0));
        memset(&b, 0, sizeof b);
        ck_assert_ok(usock_chan_recv(ch, &b, 0));
        ck_assert(memcmp(&a, &b, sizeof a) == 0);
    }
    usock_chan_free(ch);
}

START_TEST(big_items)
{
    in_task(big_items_body);
}
END_TEST

/* Blocked receivers are served oldest first, and so are blocked senders. */
static void waiter_fifo_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    struct op r[3] = {{0}}, s[3] = {{0}};
    long v;

    for (int i = 0; i < 3; i++) {
        r[i].ch = ch;
        r[i].timeout = 5.0;
        spawn_op(&r[i]);
        settle();
    }
    for (long i = 0; i < 3; i++) {
        v = 100 + i;
        /* A waiting receiver: even a non-blocking send is a hand-off. */
        ck_assert_ok(usock_chan_send(ch, &v, 0));
    }
    settle();
    for (int i = 0; i < 3; i++) {
        ck_assert(r[i].done);
        ck_assert_int_eq(r[i].rc, 0);
        ck_assert_int_eq(r[i].val, 100 + i);
    }
    for (int i = 0; i < 3; i++) {
        s[i].ch = ch;
        s[i].send = 1;
        s[i].val = 200 + i;
        s[i].timeout = USOCK_NONE;
        spawn_op(&s[i]);
        settle();
    }
    ck_assert_uint_eq(usock_chan_len(ch), 0); /* blocked senders don't count */
    for (long i = 0; i < 3; i++) {
        ck_assert_ok(usock_chan_recv(ch, &v, 0));
        ck_assert_int_eq(v, 200 + i);
    }
    settle();
    for (int i = 0; i < 3; i++) {
        ck_assert(s[i].done);
        ck_assert_int_eq(s[i].rc, 0);
    }
    usock_chan_free(ch);
}

START_TEST(waiter_fifo)
{
    in_task(waiter_fifo_body);
}
END_TEST

/* A full buffered channel: the oldest blocked sender's item moves into the
 * slot a receive frees, in order. */
static void full_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 2));
    struct op s[2] = {{0}};
    long v;

    for (v = 0; v < 2; v++) {
        ck_assert_ok(usock_chan_send(ch, &v, 0));
    }
    for (int i = 0; i < 2; i++) {
        s[i].ch = ch;
        s[i].send = 1;
        s[i].val = 2 + i;
        s[i].timeout = 5.0;
        spawn_op(&s[i]);
        settle();
    }
    ck_assert_uint_eq(usock_chan_len(ch), 2);
    ck_assert_ok(usock_chan_recv(ch, &v, 0));
    ck_assert_int_eq(v, 0);
    ck_assert_uint_eq(usock_chan_len(ch), 2); /* s[0] moved in */
    settle();
    ck_assert(s[0].done && s[0].rc == 0);
    ck_assert(!s[1].done);
    for (long want = 1; want < 4; want++) {
        ck_assert_ok(usock_chan_recv(ch, &v, 0));
        ck_assert_int_eq(v, want);
    }
    ck_assert_errno(usock_chan_recv(ch, &v, 0), EAGAIN);
    settle();
    ck_assert(s[1].done && s[1].rc == 0);
    usock_chan_free(ch);
}

START_TEST(full_waits)
{
    in_task(full_body);
}
END_TEST

/* ---- capacity 0 ---------------------------------------------------------- */

static void rendezvous_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    struct op r = {0}, s = {0};
    long v = 7;
    double t0;

    ck_assert_errno(usock_chan_send(ch, &v, 0), EAGAIN);
    ck_assert_errno(usock_chan_recv(ch, &v, 0), EAGAIN);
    t0 = usock_now();
    ck_assert_errno(usock_chan_send(ch, &v, 0.1), ETIMEDOUT);
    ck_assert_duration(t0, 0.1, 0.1);
    ck_assert_uint_eq(usock_chan_len(ch), 0);
    /* A send waits for its receiver. */
    s.ch = ch;
    s.send = 1;
    s.val = 42;
    s.timeout = USOCK_NONE;
    spawn_op(&s);
    ck_assert_ok(usock_sleep(0.1));
    ck_assert(!s.done);
    ck_assert_uint_eq(usock_chan_len(ch), 0);
    ck_assert_ok(usock_chan_recv(ch, &v, 0));
    ck_assert_int_eq(v, 42);
    settle();
    ck_assert(s.done && s.rc == 0);
    ck_assert_duration(t0, 0.2, 0.3);
    /* A receive waits for its sender. */
    r.ch = ch;
    r.timeout = 2.0;
    spawn_op(&r);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert(!r.done);
    v = 43;
    ck_assert_ok(usock_chan_send(ch, &v, 0));
    settle();
    ck_assert(r.done && r.rc == 0 && r.val == 43);
    usock_chan_free(ch);
}

START_TEST(rendezvous)
{
    in_task(rendezvous_body);
}
END_TEST

/* ---- timeouts --------------------------------------------------------- */

static void timeouts_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 1));
    usock_cond_t *c = ck_assert_nonnull(usock_cond_new());
    struct op w = {0};
    long v = 1;
    double t0 = usock_now();

    ck_assert_errno(usock_chan_recv(ch, &v, 0.2), ETIMEDOUT);
    ck_assert_duration(t0, 0.2, 0.2);
    ck_assert_ok(usock_chan_send(ch, &v, 0));
    t0 = usock_now();
    ck_assert_errno(usock_chan_send(ch, &v, 0.2), ETIMEDOUT);
    ck_assert_duration(t0, 0.2, 0.2);
    t0 = usock_now();
    ck_assert_errno(usock_cond_wait(c, 0.2), ETIMEDOUT);
    ck_assert_duration(t0, 0.2, 0.2);
    /* USOCK_NONE waits until woken. */
    w.c = c;
    w.timeout = USOCK_NONE;
    spawn_op(&w);
    ck_assert_ok(usock_sleep(0.15));
    ck_assert(!w.done);
    ck_assert_ok(usock_cond_signal(c));
    settle();
    ck_assert(w.done && w.rc == 0);
    ck_assert(w.took >= 0.15 - 1e-3);
    /* A timed wait woken in time returns 0. */
    w.timeout = 2.0;
    spawn_op(&w);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_ok(usock_cond_broadcast(c));
    settle();
    ck_assert(w.done && w.rc == 0);
    usock_chan_free(ch);
    usock_cond_free(c);
}

START_TEST(timeouts)
{
    in_task(timeouts_body);
}
END_TEST

/* ---- conditions --------------------------------------------------------- */

static void cond_body(void)
{
    usock_cond_t *c = ck_assert_nonnull(usock_cond_new());
    struct op w[4] = {{0}};

    for (int i = 0; i < 3; i++) {
        w[i].c = c;
        w[i].timeout = 5.0;
        spawn_op(&w[i]);
        settle();
    }
    /* signal: the longest waiter, one at a time. */
    for (int i = 0; i < 3; i++) {
        ck_assert_ok(usock_cond_signal(c));
        settle();
        for (int j = 0; j < 3; j++) {
            ck_assert_int_eq(w[j].done, j <= i);
        }
    }
    /* broadcast: every waiter. */
    for (int i = 0; i < 3; i++) {
        spawn_op(&w[i]);
    }
    settle();
    ck_assert_ok(usock_cond_broadcast(c));
    settle();
    for (int i = 0; i < 3; i++) {
        ck_assert(w[i].done && w[i].rc == 0);
    }
    /* A waiter that timed out does not absorb a later signal. */
    w[0].timeout = 0.05;
    w[1].timeout = USOCK_NONE;
    spawn_op(&w[0]);
    settle();
    spawn_op(&w[1]);
    settle();
    ck_assert_ok(usock_sleep(0.15));
    ck_assert(w[0].done && w[0].err == ETIMEDOUT);
    ck_assert(!w[1].done);
    ck_assert_ok(usock_cond_signal(c));
    settle();
    ck_assert(w[1].done && w[1].rc == 0);
    usock_cond_free(c);
}

START_TEST(cond_signal_broadcast)
{
    in_task(cond_body);
}
END_TEST

/* ---- close and free ---------------------------------------------------- */

static void close_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    usock_chan_t *b = ck_assert_nonnull(usock_chan_new(sizeof(long), 3));
    struct op s[2] = {{0}}, r[2] = {{0}};
    long v;

    for (int i = 0; i < 2; i++) {
        s[i].ch = ch;
        s[i].send = 1;
        s[i].timeout = i ? USOCK_NONE : 5.0;
        spawn_op(&s[i]);
    }
    settle();
    ck_assert_ok(usock_chan_close(ch));
    settle();
    for (int i = 0; i < 2; i++) {
        ck_assert(s[i].done && s[i].rc == -1 && s[i].err == EPIPE);
    }
    ck_assert_errno(usock_chan_recv(ch, &v, 0), EPIPE);
    /* Blocked receivers wake with EPIPE. */
    for (int i = 0; i < 2; i++) {
        r[i].ch = b;
        r[i].timeout = i ? USOCK_NONE : 5.0;
        spawn_op(&r[i]);
    }
    settle();
    ck_assert_ok(usock_chan_close(b));
    settle();
    for (int i = 0; i < 2; i++) {
        ck_assert(r[i].done && r[i].rc == -1 && r[i].err == EPIPE);
    }
    usock_chan_free(ch);
    usock_chan_free(b);
    /* Queued items survive the close. */
    b = ck_assert_nonnull(usock_chan_new(sizeof(long), 3));
    for (v = 0; v < 3; v++) {
        ck_assert_ok(usock_chan_send(b, &v, 0));
    }
    ck_assert_ok(usock_chan_close(b));
    ck_assert_uint_eq(usock_chan_len(b), 3);
    for (long want = 0; want < 3; want++) {
        ck_assert_ok(usock_chan_recv(b, &v, want == 1 ? USOCK_NONE : 0));
        ck_assert_int_eq(v, want);
    }
    ck_assert_errno(usock_chan_recv(b, &v, 0), EPIPE);
    usock_chan_free(b);
}

START_TEST(close_wakes)
{
    in_task(close_body);
}
END_TEST

static void free_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    usock_chan_t *e = ck_assert_nonnull(usock_chan_new(sizeof(long), 1));
    usock_cond_t *c = ck_assert_nonnull(usock_cond_new());
    struct op o[4] = {{0}};

    o[0].ch = ch;
    o[0].send = 1;
    o[0].timeout = USOCK_NONE;
    o[1].ch = e;
    o[1].timeout = 5.0;
    o[2].c = c;
    o[2].timeout = USOCK_NONE;
    o[3].c = c;
    o[3].timeout = 5.0;
    for (int i = 0; i < 4; i++) {
        spawn_op(&o[i]);
    }
    settle();
    usock_chan_free(ch);
    usock_chan_free(e);
    usock_cond_free(c);
    settle();
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(o[i].done && o[i].rc == -1 && o[i].err == EBADF,
                      "waiter %d: done %d rc %d %s", i, o[i].done, o[i].rc,
                      test_errname(o[i].err));
    }
}

START_TEST(free_wakes)
{
    in_task(free_body);
}
END_TEST

/* ---- cancel and deadline ----------------------------------------------- */

static void cancel_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    usock_cond_t *c = ck_assert_nonnull(usock_cond_new());
    struct op o[3] = {{0}};
    int id[3];
    long v = 5;

    o[0].ch = ch;
    o[0].timeout = USOCK_NONE;
    o[1].ch = ch;
    o[1].send = 1;
    o[1].timeout = 5.0;
    o[2].c = c;
    o[2].timeout = USOCK_NONE;
    for (int i = 0; i < 3; i++) {
        id[i] = spawn_op(&o[i]);
    }
    settle();
    /* o[0] and o[1] met already (rendezvous): spawn o[0] again. */
    ck_assert(o[0].done && o[0].rc == 0 && o[1].done && o[1].rc == 0);
    id[0] = spawn_op(&o[0]);
    settle();
    ck_assert(!o[0].done && !o[2].done);
    ck_assert_ok(usock_cancel(id[0]));
    ck_assert_ok(usock_cancel(id[2]));
    settle();
    ck_assert(o[0].done && o[0].rc == -1 && o[0].err == ECANCELED);
    ck_assert(o[2].done && o[2].rc == -1 && o[2].err == ECANCELED);
    /* The cancelled receiver is gone: a send finds nobody. */
    ck_assert_errno(usock_chan_send(ch, &v, 0), EAGAIN);
    usock_chan_free(ch);
    usock_cond_free(c);
}

START_TEST(cancel_during_wait)
{
    in_task(cancel_body);
}
END_TEST

/* Cancel is sticky: every later wait fails at once. */
static void sticky_task(void *arg)
{
    usock_chan_t *ch = arg;
    usock_cond_t *c = usock_cond_new();
    long v = 1;

    ck_assert_ptr_nonnull(c);
    ck_assert_ok(usock_cancel(usock_self()));
    ck_assert_errno(usock_chan_recv(ch, &v, USOCK_NONE), ECANCELED);
    ck_assert_errno(usock_chan_recv(ch, &v, 1.0), ECANCELED);
    ck_assert_errno(usock_cond_wait(c, USOCK_NONE), ECANCELED);
    /* Calls that need no wait still work. */
    ck_assert_ok(usock_chan_send(ch, &v, 0));
    ck_assert_ok(usock_chan_recv(ch, &v, USOCK_NONE));
    ck_assert_errno(usock_chan_recv(ch, &v, 0), EAGAIN);
    usock_cond_free(c);
    body_done = 2;
}

START_TEST(cancel_sticky)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 1));

    body_done = 0;
    ck_assert_int_gt(usock_spawn(sticky_task, ch), 0);
    ck_assert_ok(usock_run());
    ck_assert_int_eq(body_done, 2);
    usock_chan_free(ch);
}
END_TEST

static void deadline_body(void)
{
    usock_chan_t *ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    usock_cond_t *c = ck_assert_nonnull(usock_cond_new());
    long v = 0;
    double t0 = usock_now();

    usock_setdeadline(t0 + 0.2);
    ck_assert_errno(usock_chan_recv(ch, &v, USOCK_NONE), ETIMEDOUT);
    ck_assert_duration(t0, 0.2, 0.2);
    ck_assert_errno(usock_chan_send(ch, &v, 5.0), ETIMEDOUT);
    ck_assert_errno(usock_cond_wait(c, USOCK_NONE), ETIMEDOUT);
    ck_assert_errno(usock_cond_wait(c, 0), EAGAIN);
    ck_assert_duration(t0, 0.2, 0.2);
    usock_setdeadline(USOCK_NONE);
    usock_chan_free(ch);
    usock_cond_free(c);
}

START_TEST(deadline_during_wait)
{
    in_task(deadline_body);
}
END_TEST

/* ---- many tasks on one hub ---------------------------------------------- */

#define NPROD 20
#define NCONS 20
#define PER 1000

struct mix {
    usock_chan_t *ch;
    unsigned char seen[NPROD * PER];
    long last[NPROD];
    int senders_left;
    long received;
};

static void mix_sender(void *arg)
{
    struct mix *m = arg;
    static int next_id;
    int me = next_id++ % NPROD;

    for (long i = 0; i < PER; i++) {
        long v = (long)me * PER + i;
        ck_assert_ok(usock_chan_send(m->ch, &v, 10.0));
        if (i % 7 == 0) {
            usock_yield();
        }
    }
    if (--m->senders_left == 0) {
        ck_assert_ok(usock_chan_close(m->ch));
    }
}

static void mix_receiver(void *arg)
{
    struct mix *m = arg;
    long v;

    while (usock_chan_recv(m->ch, &v, 10.0) == 0) {
        ck_assert(v >= 0 && v < NPROD * PER);
        ck_assert_int_eq(m->seen[v]++, 0);
        m->received++;
    }
    ck_assert_int_eq(errno, EPIPE);
}

static void run_mix(size_t cap)
{
    static struct mix m;

    memset(&m, 0, sizeof m);
    m.ch = ck_assert_nonnull(usock_chan_new(sizeof(long), cap));
    m.senders_left = NPROD;
    for (int i = 0; i < NCONS; i++) {
        ck_assert_int_gt(usock_spawn(mix_receiver, &m), 0);
    }
    for (int i = 0; i < NPROD; i++) {
        ck_assert_int_gt(usock_spawn(mix_sender, &m), 0);
    }
    ck_assert_ok(usock_run());
    ck_assert_int_eq(m.received, NPROD * PER);
    usock_chan_free(m.ch);
}

START_TEST(many_tasks_exactly_once)
{
    run_mix(0);
    run_mix(1);
    run_mix(64);
}
END_TEST

/* One receiver: each sender's items arrive in the order it sent them. */
static void order_receiver(void *arg)
{
    struct mix *m = arg;
    long v;

    for (int i = 0; i < NPROD; i++) {
        m->last[i] = -1;
    }
    while (usock_chan_recv(m->ch, &v, 10.0) == 0) {
        ck_assert_int_gt(v % PER, m->last[v / PER]);
        m->last[v / PER] = v % PER;
        m->received++;
    }
}

START_TEST(per_sender_order)
{
    static struct mix m;

    memset(&m, 0, sizeof m);
    m.ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 5));
    m.senders_left = NPROD;
    ck_assert_int_gt(usock_spawn(order_receiver, &m), 0);
    for (int i = 0; i < NPROD; i++) {
        ck_assert_int_gt(usock_spawn(mix_sender, &m), 0);
    }
    ck_assert_ok(usock_run());
    ck_assert_int_eq(m.received, NPROD * PER);
    usock_chan_free(m.ch);
}
END_TEST

/* ---- threads ---------------------------------------------------------- */

#define NTHREADS 4
#define TASKS 1000 /* per thread: half senders, half receivers */
#define ITEMS 1000000
#define PER_SENDER (ITEMS / (NTHREADS * TASKS / 2))

struct swarm {
    usock_chan_t *ch[2];
    unsigned char *seen;
    int senders_left;   /* atomic */
    long received;      /* atomic */
    int dup;            /* atomic */
    int next_sender;    /* atomic */
};

static struct swarm sw;

static void swarm_sender(void *arg)
{
    (void)arg;
    int me = __atomic_fetch_add(&sw.next_sender, 1, __ATOMIC_RELAXED);

    for (long i = 0; i < PER_SENDER; i++) {
        long v = (long)me * PER_SENDER + i;
        /* Alternate between the two channels. */
        ck_assert_ok(usock_chan_send(sw.ch[v & 1], &v, 60.0));
    }
    if (__atomic_sub_fetch(&sw.senders_left, 1, __ATOMIC_ACQ_REL) == 0) {
        ck_assert_ok(usock_chan_close(sw.ch[0]));
        ck_assert_ok(usock_chan_close(sw.ch[1]));
    }
}

static void swarm_receiver(void *arg)
{
    usock_chan_t *ch = sw.ch[(intptr_t)arg & 1];
    long v, n = 0;

    while (usock_chan_recv(ch, &v, 60.0) == 0) {
        if (v < 0 || v >= ITEMS ||
            __atomic_fetch_add(&sw.seen[v], 1, __ATOMIC_RELAXED) != 0) {
            __atomic_store_n(&sw.dup, 1, __ATOMIC_RELAXED);
        }
        n++;
    }
    ck_assert_int_eq(errno, EPIPE);
    __atomic_add_fetch(&sw.received, n, __ATOMIC_RELAXED);
}

static void *swarm_thread(void *arg)
{
    (void)arg;
    for (intptr_t i = 0; i < TASKS / 2; i++) {
        ck_assert_int_gt(usock_spawn(swarm_receiver, (void *)i), 0);
        ck_assert_int_gt(usock_spawn(swarm_sender, NULL), 0);
    }
    ck_assert_ok(usock_run());
    return NULL;
}

START_TEST(threads_million_items)
{
    pthread_t t[NTHREADS];

    memset(&sw, 0, sizeof sw);
    sw.seen = ck_assert_nonnull(calloc(ITEMS, 1));
    sw.ch[0] = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    sw.ch[1] = ck_assert_nonnull(usock_chan_new(sizeof(long), 16));
    sw.senders_left = NTHREADS * TASKS / 2;
    ck_assert_ok(usock_setstacksize(16384));
    for (int i = 0; i < NTHREADS; i++) {
        ck_assert_int_eq(pthread_create(&t[i], NULL, swarm_thread, NULL), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
    }
    ck_assert_int_eq(sw.dup, 0);
    ck_assert_int_eq(sw.received, ITEMS);
    for (long i = 0; i < ITEMS; i++) {
        ck_assert_msg(sw.seen[i] == 1, "item %ld seen %d times", i,
                      sw.seen[i]);
    }
    usock_chan_free(sw.ch[0]);
    usock_chan_free(sw.ch[1]);
    free(sw.seen);
}
END_TEST

/* A plain thread (no tasks, no reactor) and a task exchange items: the
 * thread sends requests, the task answers each on a second channel. */
struct pingpong {
    usock_chan_t *req, *rep;
    usock_cond_t *c;
    long sum;
    int err;
    int signalled; /* atomic */
    double cond_took;
};

#define NPING 2000

static void *plain_thread(void *arg)
{
    struct pingpong *p = arg;
    long v, back;
    double t0;

    for (v = 0; v < NPING; v++) {
        if (usock_chan_send(p->req, &v, 5.0) < 0 ||
            usock_chan_recv(p->rep, &back, 5.0) < 0 || back != v * 2) {
            p->err = errno ? errno : -1;
            return NULL;
        }
    }
    /* Plain-thread timeouts. */
    t0 = usock_now();
    if (usock_chan_recv(p->rep, &back, 0.1) != -1 || errno != ETIMEDOUT ||
        usock_now() - t0 < 0.1) {
        p->err = -2;
        return NULL;
    }
    if (usock_chan_recv(p->rep, &back, 0) != -1 || errno != EAGAIN) {
        p->err = -3;
        return NULL;
    }
    /* Woken by the task's signal. */
    v = -1;
    t0 = usock_now();
    if (usock_chan_send(p->req, &v, 5.0) < 0) {
        p->err = errno;
        return NULL;
    }
    while (!__atomic_load_n(&p->signalled, __ATOMIC_ACQUIRE)) {
        if (usock_cond_wait(p->c, 5.0) < 0) {
            p->err = errno;
            return NULL;
        }
    }
    p->cond_took = usock_now() - t0;
    usock_chan_close(p->req);
    return NULL;
}

static void answer_task(void *arg)
{
    struct pingpong *p = arg;
    long v;

    while (usock_chan_recv(p->req, &v, 10.0) == 0) {
        if (v == -1) {
            ck_assert_ok(usock_sleep(0.1));
            __atomic_store_n(&p->signalled, 1, __ATOMIC_RELEASE);
            ck_assert_ok(usock_cond_signal(p->c));
            continue;
        }
        p->sum += v;
        v *= 2;
        ck_assert_ok(usock_chan_send(p->rep, &v, 5.0));
    }
    ck_assert_int_eq(errno, EPIPE);
}

START_TEST(plain_thread_and_task)
{
    struct pingpong p = {0};
    pthread_t t;

    p.req = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    p.rep = ck_assert_nonnull(usock_chan_new(sizeof(long), 1));
    p.c = ck_assert_nonnull(usock_cond_new());
    ck_assert_int_gt(usock_spawn(answer_task, &p), 0);
    ck_assert_int_eq(pthread_create(&t, NULL, plain_thread, &p), 0);
    ck_assert_ok(usock_run());
    pthread_join(t, NULL);
    ck_assert_msg(p.err == 0, "plain thread failed: %d %s", p.err,
                  p.err > 0 ? test_errname(p.err) : "");
    ck_assert_int_eq(p.sum, (long)NPING * (NPING - 1) / 2);
    ck_assert(p.cond_took >= 0.1 && p.cond_took < 0.1 + 0.2 * test_mult());
    usock_chan_free(p.req);
    usock_chan_free(p.rep);
    usock_cond_free(p.c);
}
END_TEST

/* A task of another hub blocked in recv wakes well under 0.2 s after a
 * send from this thread; a cond waiter likewise after a signal.  The flags
 * say when the remote task is about to wait (it does not yield before it
 * parks), and the cond is used with its predicate, so a signal that comes
 * early is not lost. */
struct remote {
    usock_chan_t *ch;
    usock_cond_t *c;
    double got_at, woke_at;
    long v;
    int rc1, rc2;
    int ready1, ready2, flag; /* atomic */
};

static void remote_task(void *arg)
{
    struct remote *r = arg;

    __atomic_store_n(&r->ready1, 1, __ATOMIC_RELEASE);
    r->rc1 = usock_chan_recv(r->ch, &r->v, 5.0);
    r->got_at = usock_now();
    __atomic_store_n(&r->ready2, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&r->flag, __ATOMIC_ACQUIRE) &&
           (r->rc2 = usock_cond_wait(r->c, 5.0)) == 0) {
    }
    r->woke_at = usock_now();
}

static void *remote_thread(void *arg)
{
    usock_spawn(remote_task, arg);
    usock_run();
    return NULL;
}

static void await_flag(int *flag)
{
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
        ck_assert_ok(usock_sleep(0.001));
    }
    ck_assert_ok(usock_sleep(0.02));
}

START_TEST(cross_hub_wake_latency)
{
    struct remote r = {0};
    pthread_t t;
    long v = 99;
    double t0, t1;

    r.ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    r.c = ck_assert_nonnull(usock_cond_new());
    ck_assert_int_eq(pthread_create(&t, NULL, remote_thread, &r), 0);
    await_flag(&r.ready1);
    t0 = usock_now();
    ck_assert_ok(usock_chan_send(r.ch, &v, 2.0)); /* the receiver waits */
    await_flag(&r.ready2);
    t1 = usock_now();
    __atomic_store_n(&r.flag, 1, __ATOMIC_RELEASE);
    ck_assert_ok(usock_cond_signal(r.c));
    pthread_join(t, NULL);
    ck_assert_int_eq(r.rc1, 0);
    ck_assert_int_eq(r.rc2, 0);
    ck_assert_int_eq(r.v, 99);
    ck_assert_msg(r.got_at - t0 < 0.2 * test_mult(), "recv woke after %.3f s",
                  r.got_at - t0);
    ck_assert_msg(r.woke_at - t1 < 0.2 * test_mult(), "wait woke after %.3f s",
                  r.woke_at - t1);
    usock_chan_free(r.ch);
    usock_cond_free(r.c);
}
END_TEST

/* A timeout racing a hand-off from another thread: each item is delivered
 * exactly when both calls say so ("never both, never neither"). */
#define RACE_N 3000

struct race {
    usock_chan_t *ch;
    long sent_ok, recv_ok, recv_sum, sent_sum;
};

static void *race_sender(void *arg)
{
    struct race *r = arg;

    for (long i = 1; i <= RACE_N; i++) {
        if (usock_chan_send(r->ch, &i, 0.0001 * (double)(i % 5)) == 0) {
            r->sent_ok++;
            r->sent_sum += i;
        }
    }
    return NULL;
}

static void race_body(void)
{
    static struct race r;
    pthread_t t;
    long v;

    memset(&r, 0, sizeof r);
    r.ch = ck_assert_nonnull(usock_chan_new(sizeof(long), 0));
    ck_assert_int_eq(pthread_create(&t, NULL, race_sender, &r), 0);
    for (long i = 0; i < RACE_N * 2; i++) {
        if (usock_chan_recv(r.ch, &v, 0.0001 * (double)(i % 3)) == 0) {
            r.recv_ok++;
            r.recv_sum += v;
        } else {
            ck_assert(errno == ETIMEDOUT || errno == EAGAIN);
        }
    }
    pthread_join(t, NULL);
    while (usock_chan_recv(r.ch, &v, 0) == 0) {
        r.recv_ok++;
        r.recv_sum += v;
    }
    ck_assert_int_eq(r.sent_ok, r.recv_ok);
    ck_assert_int_eq(r.sent_sum, r.recv_sum);
    ck_assert_int_gt(r.recv_ok, 0);
    usock_chan_free(r.ch);
}

START_TEST(timeout_races_handoff)
{
    in_task(race_body);
}
END_TEST

/* Cond waiters on several hubs: broadcast from a plain thread wakes all. */
static usock_cond_t *bc_cond;
static int bc_woken;

static void bc_task(void *arg)
{
    (void)arg;
    if (usock_cond_wait(bc_cond, 5.0) == 0) {
        __atomic_add_fetch(&bc_woken, 1, __ATOMIC_RELAXED);
    }
}

static void *bc_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        usock_spawn(bc_task, NULL);
    }
    usock_run();
    return NULL;
}

START_TEST(broadcast_across_hubs)
{
    pthread_t t[3];
    struct timespec ts = {0, 200000000};

    bc_cond = ck_assert_nonnull(usock_cond_new());
    bc_woken = 0;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(pthread_create(&t[i], NULL, bc_thread, NULL), 0);
    }
    nanosleep(&ts, NULL); /* this thread never uses a hub */
    ck_assert_ok(usock_cond_broadcast(bc_cond));
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
    }
    ck_assert_int_eq(bc_woken, 30);
    usock_cond_free(bc_cond);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, errors);
    tcase_add_test(tc, buffered_fifo);
    tcase_add_test(tc, big_items);
    tcase_add_test(tc, waiter_fifo);
    tcase_add_test(tc, full_waits);
    tcase_add_test(tc, rendezvous);
    tcase_add_test(tc, timeouts);
    tcase_add_test(tc, cond_signal_broadcast);
    tcase_add_test(tc, close_wakes);
    tcase_add_test(tc, free_wakes);
    tcase_add_test(tc, cancel_during_wait);
    tcase_add_test(tc, cancel_sticky);
    tcase_add_test(tc, deadline_during_wait);
    tcase_add_test(tc, many_tasks_exactly_once);
    tcase_add_test(tc, per_sender_order);
    tcase_add_test(tc, plain_thread_and_task);
    tcase_add_test(tc, cross_hub_wake_latency);
    tcase_add_test(tc, timeout_races_handoff);
    tcase_add_test(tc, broadcast_across_hubs);
}

/* Tagged slow (left out of make check-valgrind). */
static void add_slow_tests(TCase *tc)
{
    tcase_set_tags(tc, "slow");
    tcase_add_test(tc, threads_million_items);
}

static Suite *chan_suite(void)
{
    Suite *s = suite_create("chan");

    add_reactor_tcases(s, "chan", add_tests, 60);
    add_reactor_tcases(s, "chan_swarm", add_slow_tests, 240);
    return s;
}

int main(void)
{
    return test_main(chan_suite());
}
