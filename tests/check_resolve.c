/*
 * Suite "resolve": usock_getaddrinfo — numeric hosts, /etc/hosts, filters,
 * EAI_* errors, and the rule that a lookup never stalls the other tasks of
 * the hub (a hidden hook makes the worker slow), with cancel, deadline and
 * many lookups at once.
 */
#include "config.h"

#include <check.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <usocket.h>

#include "helpers.h"

/* The library's test hook, called on the worker thread before
 * getaddrinfo(3) (the tests link the core statically). */
extern void (*usock__resolve_hook)(const char *);

#define ROUND_TRIPS 50
#define LOOKUPS 100

/* Seconds the hook sleeps for "localhost"; set before the lookup starts. */
static double hook_delay;

static void slow_hook(const char *host)
{
    if (host != NULL && strcmp(host, "localhost") == 0) {
        struct timespec ts = {(time_t)hook_delay,
                              (long)((hook_delay - (time_t)hook_delay) *
                                     1e9)};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
}

static void set_hook(double delay)
{
    hook_delay = delay;
    __atomic_store_n(&usock__resolve_hook, delay > 0 ? slow_hook : NULL,
                     __ATOMIC_RELEASE);
}

static void reset_hook(void)
{
    __atomic_store_n(&usock__resolve_hook, NULL, __ATOMIC_RELEASE);
    usock_setdeadline(USOCK_NONE);
}

static const char *fmt(const usock_addr_t *a, char *buf, size_t n)
{
    const char *r = usock_addr_format(a, buf, n);

    ck_assert_ptr_nonnull(r);
    return r;
}

/* Count the entries of res of each socket type; check every entry's
 * family and formatted address. */
static int check_list(const usock_addrinfo_t *res, int family,
                      const char *want, int *stream, int *dgram)
{
    char buf[64];
    int n = 0;

    *stream = *dgram = 0;
    for (const usock_addrinfo_t *r = res; r != NULL; r = r->next, n++) {
        ck_assert_int_eq(r->family, family);
        ck_assert_int_eq(r->addr.u.sa.sa_family, family);
        ck_assert_str_eq(fmt(&r->addr, buf, sizeof buf), want);
        ck_assert_ptr_nonnull(r->canonname);
        *stream += r->type == SOCK_STREAM;
        *dgram += r->type == SOCK_DGRAM;
        if (r->type == SOCK_STREAM) {
            ck_assert_int_eq(r->proto, IPPROTO_TCP);
        } else if (r->type == SOCK_DGRAM) {
            ck_assert_int_eq(r->proto, IPPROTO_UDP);
        } else {
            ck_assert_int_eq(r->type, SOCK_RAW);
        }
    }
    return n;
}

/* ---- results ------------------------------------------------------------ */

START_TEST(numeric_ipv4)
{
    usock_addrinfo_t *res = (void *)1;
    int stream, dgram;

    ck_assert_int_eq(usock_getaddrinfo("127.0.0.1", 80, 0, 0, 0, &res), 0);
    ck_assert_ptr_nonnull(res);
    ck_assert_int_ge(check_list(res, AF_INET, "127.0.0.1:80", &stream,
                                &dgram), 2);
    ck_assert_int_eq(stream, 1);
    ck_assert_int_eq(dgram, 1);
    ck_assert_int_eq(usock_addr_port(&res->addr), 80);
    usock_freeaddrinfo(res);
}
END_TEST

START_TEST(numeric_ipv6)
{
    usock_addrinfo_t *res = NULL;
    int stream, dgram;

    ck_assert_int_eq(usock_getaddrinfo("::1", 443, 0, 0, 0, &res), 0);
    ck_assert_int_ge(check_list(res, AF_INET6, "[::1]:443", &stream,
                                &dgram), 2);
    ck_assert_int_eq(stream, 1);
    ck_assert_int_eq(dgram, 1);
    usock_freeaddrinfo(res);
    /* The same with the family asked and AI_NUMERICHOST. */
    ck_assert_int_eq(usock_getaddrinfo("::1", 0, AF_INET6, SOCK_DGRAM,
                                       AI_NUMERICHOST, &res), 0);
    ck_assert_int_eq(check_list(res, AF_INET6, "[::1]:0", &stream, &dgram),
                     1);
    ck_assert_int_eq(dgram, 1);
    usock_freeaddrinfo(res);
}
END_TEST

/* "localhost" comes from /etc/hosts: 127.0.0.1 and/or ::1. */
START_TEST(localhost_from_hosts)
{
    usock_addrinfo_t *res = NULL;
    char buf[64];
    int n = 0, stream = 0;

    ck_assert_int_eq(usock_getaddrinfo("localhost", 8080, 0, 0, 0, &res), 0);
    for (usock_addrinfo_t *r = res; r != NULL; r = r->next, n++) {
        const char *a = fmt(&r->addr, buf, sizeof buf);
        ck_assert_msg(strcmp(a, "127.0.0.1:8080") == 0 ||
                          strcmp(a, "[::1]:8080") == 0,
                      "localhost resolved to %s", a);
        ck_assert(r->family == AF_INET || r->family == AF_INET6);
        ck_assert_int_eq(r->family, r->addr.u.sa.sa_family);
        stream += r->type == SOCK_STREAM;
    }
    ck_assert_int_ge(n, 1);
    ck_assert_int_ge(stream, 1);
    usock_freeaddrinfo(res);
}
END_TEST

START_TEST(type_and_family_filters)
{
    usock_addrinfo_t *res = NULL;
    int stream, dgram, n;

    ck_assert_int_eq(usock_getaddrinfo("127.0.0.1", 25, 0, SOCK_STREAM, 0,
                                       &res), 0);
    n = check_list(res, AF_INET, "127.0.0.1:25", &stream, &dgram);
    ck_assert_int_ge(n, 1);
    ck_assert_int_eq(stream, n);
    usock_freeaddrinfo(res);
    /* Through the resolver too. */
    ck_assert_int_eq(usock_getaddrinfo("localhost", 25, AF_INET, SOCK_STREAM,
                                       0, &res), 0);
    n = check_list(res, AF_INET, "127.0.0.1:25", &stream, &dgram);
    ck_assert_int_ge(n, 1);
    ck_assert_int_eq(stream, n);
    usock_freeaddrinfo(res);
    ck_assert_int_eq(usock_getaddrinfo("localhost", 53, AF_INET, SOCK_DGRAM,
                                       0, &res), 0);
    n = check_list(res, AF_INET, "127.0.0.1:53", &stream, &dgram);
    ck_assert_int_ge(n, 1);
    ck_assert_int_eq(dgram, n);
    usock_freeaddrinfo(res);
}
END_TEST

START_TEST(no_host_means_loopback_or_any)
{
    usock_addrinfo_t *res = NULL;
    char buf[64];

    ck_assert_int_eq(usock_getaddrinfo(NULL, 8080, AF_INET, SOCK_STREAM,
                                       AI_PASSIVE, &res), 0);
    ck_assert_str_eq(fmt(&res->addr, buf, sizeof buf), "0.0.0.0:8080");
    usock_freeaddrinfo(res);
    ck_assert_int_eq(usock_getaddrinfo(NULL, 8080, AF_INET, SOCK_STREAM, 0,
                                       &res), 0);
    ck_assert_str_eq(fmt(&res->addr, buf, sizeof buf), "127.0.0.1:8080");
    usock_freeaddrinfo(res);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

START_TEST(family_mismatch)
{
    usock_addrinfo_t *res = (void *)1;
    int rc = usock_getaddrinfo("127.0.0.1", 80, AF_INET6, 0, 0, &res);

    ck_assert_msg(rc == EAI_ADDRFAMILY || rc == EAI_NONAME, "rc %d (%s)", rc,
                  gai_strerror(rc));
    ck_assert_ptr_null(res);
}
END_TEST

START_TEST(bad_port)
{
    usock_addrinfo_t *res = (void *)1;

    ck_assert_int_eq(usock_getaddrinfo("127.0.0.1", 65536, 0, 0, 0, &res),
                     EAI_SERVICE);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(usock_getaddrinfo("127.0.0.1", -1, 0, 0, 0, &res),
                     EAI_SERVICE);
    ck_assert_int_eq(usock_getaddrinfo("localhost", 1 << 20, 0, 0, 0, &res),
                     EAI_SERVICE);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(usock_getaddrinfo("127.0.0.1", 65535, 0, SOCK_STREAM, 0,
                                       &res), 0);
    ck_assert_int_eq(usock_addr_port(&res->addr), 65535);
    usock_freeaddrinfo(res);
}
END_TEST

START_TEST(numerichost_rejects_names)
{
    static const char *const bad[] = {"256.1.1.1",  "1.2.3.4.5", "[::1]",
                                      "127.0.0.1 ", "localhost", "::g",
                                      "fe80::1%nosuchif"};
    usock_addrinfo_t *res;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        res = (void *)1;
        int rc = usock_getaddrinfo(bad[i], 80, 0, 0, AI_NUMERICHOST, &res);
        ck_assert_msg(rc == EAI_NONAME, "\"%s\": rc %d (%s)", bad[i], rc,
                      gai_strerror(rc));
        ck_assert_ptr_null(res);
    }
}
END_TEST

/* B03: a 1,099-character host and a 64-character label (DNS allows 63)
 * are refused as unknown names, at once and without a lookup on the wire
 * (ASan and valgrind runs check the copies). */
START_TEST(overlong_names)
{
    static char big[1100], label[80];
    usock_addrinfo_t *res;
    double t0 = usock_now();

    memset(big, 'a', 1099);
    memset(label, 'b', 64);
    strcpy(label + 64, ".example");
    usock_setdeadline(usock_now() + 10.0);
    res = (void *)1;
    int rc = usock_getaddrinfo(big, 80, 0, 0, 0, &res);
    ck_assert_msg(rc == EAI_NONAME || rc == EAI_FAIL, "1,099 chars: rc %d (%s)",
                  rc, gai_strerror(rc));
    ck_assert_ptr_null(res);
    res = (void *)1;
    rc = usock_getaddrinfo(label, 80, 0, 0, 0, &res);
    ck_assert_msg(rc == EAI_NONAME || rc == EAI_FAIL,
                  "64-char label: rc %d (%s)", rc, gai_strerror(rc));
    ck_assert_ptr_null(res);
    usock_setdeadline(USOCK_NONE);
    ck_assert_duration(t0, 0.0, 1.0);
}
END_TEST

/* DNS may be unreachable here: bounded by a task deadline, whose expiry is
 * EAI_SYSTEM with errno ETIMEDOUT, also accepted. */
START_TEST(unknown_name)
{
    usock_addrinfo_t *res = (void *)1;

    usock_setdeadline(usock_now() + 10.0);
    errno = 0;
    int rc = usock_getaddrinfo("no-such-host.invalid", 80, 0, 0, 0, &res);
    int err = errno;
    usock_setdeadline(USOCK_NONE);
    ck_assert_msg(rc == EAI_NONAME || rc == EAI_AGAIN || rc == EAI_FAIL ||
                      rc == EAI_NODATA ||
                      (rc == EAI_SYSTEM && err == ETIMEDOUT),
                  "rc %d (%s), errno %s", rc, gai_strerror(rc),
                  test_errname(err));
    ck_assert_ptr_null(res);
}
END_TEST

START_TEST(null_res)
{
    errno = 0;
    ck_assert_int_eq(usock_getaddrinfo("127.0.0.1", 80, 0, 0, 0, NULL),
                     EAI_SYSTEM);
    ck_assert_str_eq(test_errname(errno), "EINVAL");
    errno = 0;
    ck_assert_int_eq(usock_getaddrinfo("localhost", 80, 0, 0, 0, NULL),
                     EAI_SYSTEM);
    ck_assert_str_eq(test_errname(errno), "EINVAL");
    usock_freeaddrinfo(NULL); /* harmless */
}
END_TEST

/* ---- never stalls the hub ----------------------------------------------- */

struct lookup {
    const char *host;
    int port, rc, err, done;
    double start, end;
    char addr[64];
};

static void lookup_task(void *arg)
{
    struct lookup *l = arg;
    usock_addrinfo_t *res = NULL;

    l->start = usock_now();
    errno = 0;
    l->rc = usock_getaddrinfo(l->host, l->port, AF_INET, SOCK_STREAM, 0, &res);
    l->err = errno;
    l->end = usock_now();
    if (l->rc == 0 && res != NULL) {
        usock_addr_format(&res->addr, l->addr, sizeof l->addr);
    }
    usock_freeaddrinfo(res);
    l->done = 1;
}

/* The hub resolves again after a slow, cancelled or orphaned lookup. */
static void assert_still_resolves(void)
{
    struct lookup b = {.host = "localhost", .port = 7, .rc = -100};

    lookup_task(&b);
    ck_assert_int_eq(b.rc, 0);
    ck_assert_str_eq(b.addr, "127.0.0.1:7");
}

static void echo_task(void *arg)
{
    usock_t *s = arg;
    char b[64];
    ssize_t n;

    while ((n = usock_recv(s, b, sizeof b)) > 0) {
        usock_sendall(s, b, (size_t)n);
    }
}

struct pinger {
    usock_t *c;
    int trips, done;
    double max_gap, end;
};

/* Round trips over the pair, with a 1 ms sleep between, timing the gaps. */
static void ping_task(void *arg)
{
    struct pinger *p = arg;
    double last = usock_now();
    char b;

    for (p->trips = 0; p->trips < ROUND_TRIPS; p->trips++) {
        if (usock_sendall(p->c, "p", 1) < 0 || usock_recv(p->c, &b, 1) != 1) {
            break;
        }
        double now = usock_now();
        p->max_gap = now - last > p->max_gap ? now - last : p->max_gap;
        last = now;
        usock_sleep(0.001);
    }
    p->end = usock_now();
    usock_shutdown(p->c, SHUT_WR);
    p->done = 1;
}

static void wait_flag(const int *flag, double limit)
{
    double end = usock_now() + limit * test_mult();

    while (!*flag && usock_now() < end) {
        usock_sleep(0.005);
    }
    ck_assert_msg(*flag, "not done within %.3f s", limit * test_mult());
}

START_TEST(lookup_does_not_stall)
{
    struct lookup a = {.host = "localhost", .port = 80, .rc = -100};
    struct pinger p = {0};
    usock_t *c, *s;

    test_pair(&c, &s);
    p.c = c;
    set_hook(2.0);
    ck_assert_int_gt(usock_spawn(lookup_task, &a), 0);
    ck_assert_int_gt(usock_spawn(echo_task, s), 0);
    ck_assert_int_gt(usock_spawn(ping_task, &p), 0);
    wait_flag(&a.done, 10.0);
    reset_hook();
    ck_assert_int_eq(a.rc, 0);
    ck_assert_str_eq(a.addr, "127.0.0.1:80");
    ck_assert_msg(a.end - a.start >= 2.0, "lookup took %.3f s",
                  a.end - a.start);
    ck_assert(p.done);
    ck_assert_int_eq(p.trips, ROUND_TRIPS);
    ck_assert_msg(p.max_gap < 0.2 * test_mult(), "largest gap %.3f s",
                  p.max_gap);
    ck_assert_msg(p.end < a.end - 1.0, "pinger ended %.3f s before lookup",
                  a.end - p.end);
    ck_assert_ok(usock_run());
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(cancel_lookup)
{
    struct lookup a = {.host = "localhost", .port = 80, .rc = -100};
    int id;

    set_hook(1.0);
    id = usock_spawn(lookup_task, &a);
    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_sleep(0.1));
    ck_assert_int_eq(a.done, 0);
    double t0 = usock_now();
    ck_assert_ok(usock_cancel(id));
    wait_flag(&a.done, 2.0);
    ck_assert_msg(a.end - t0 < 0.5 * test_mult(), "returned %.3f s after "
                  "the cancel", a.end - t0);
    ck_assert_int_eq(a.rc, EAI_SYSTEM);
    ck_assert_str_eq(test_errname(a.err), "ECANCELED");
    /* The late result arrives while the hub runs: dropped quietly. */
    ck_assert_ok(usock_sleep(1.5));
    reset_hook();
    assert_still_resolves();
}
END_TEST

START_TEST(deadline_lookup)
{
    usock_addrinfo_t *res = (void *)1;

    set_hook(1.0);
    double t0 = usock_now();
    usock_setdeadline(usock_now() + 0.2);
    errno = 0;
    int rc = usock_getaddrinfo("localhost", 80, 0, 0, 0, &res);
    int err = errno;
    usock_setdeadline(USOCK_NONE);
    ck_assert_duration(t0, 0.2, 0.5);
    ck_assert_int_eq(rc, EAI_SYSTEM);
    ck_assert_str_eq(test_errname(err), "ETIMEDOUT");
    ck_assert_ptr_null(res);
    /* Let the worker finish and its result be freed. */
    ck_assert_ok(usock_sleep(1.2));
    reset_hook();
}
END_TEST

START_TEST(many_lookups)
{
    static struct lookup l[LOOKUPS];
    char want[64];

    reset_hook();
    for (int i = 0; i < LOOKUPS; i++) {
        l[i] = (struct lookup){.host = "localhost", .port = 1000 + i,
                               .rc = -100};
        ck_assert_int_gt(usock_spawn(lookup_task, &l[i]), 0);
    }
    double end = usock_now() + 20.0 * test_mult();
    int done = 0;
    while (done < LOOKUPS && usock_now() < end) {
        usock_sleep(0.005);
        done = 0;
        for (int i = 0; i < LOOKUPS; i++) {
            done += l[i].done;
        }
    }
    ck_assert_int_eq(done, LOOKUPS);
    for (int i = 0; i < LOOKUPS; i++) {
        snprintf(want, sizeof want, "127.0.0.1:%d", 1000 + i);
        ck_assert_msg(l[i].rc == 0, "lookup %d: rc %d (%s) errno %s", i,
                      l[i].rc, gai_strerror(l[i].rc), test_errname(l[i].err));
        ck_assert_str_eq(l[i].addr, want);
    }
}
END_TEST

/* A thread whose task waits on a slow lookup exits before the worker is
 * done: the task is cancelled and unwinds, the worker must not touch the
 * freed hub, and the waiting task's record is gone, so the worker frees
 * the result.  (The use after free this
 * guards against shows under make check-asan / check-valgrind.) */
static struct lookup orphan = {.host = "localhost", .port = 80, .rc = -100};

static void *orphan_thread(void *arg)
{
    (void)arg;
    if (usock_spawn(lookup_task, &orphan) < 0 || usock_sleep(0.1) < 0) {
        return (void *)1;
    }
    return NULL; /* the lookup is still in flight: the hub goes now */
}

START_TEST(thread_exits_during_lookup)
{
    pthread_t th;
    void *ret = (void *)2;

    set_hook(0.5);
    ck_assert_int_eq(pthread_create(&th, NULL, orphan_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(th, &ret), 0);
    ck_assert_ptr_null(ret);
    /* The thread's exit unwound the task (DESIGN "Lifetimes across
     * threads"): its lookup failed with ECANCELED, not with a result. */
    ck_assert_int_eq(orphan.done, 1);
    ck_assert_int_eq(orphan.rc, EAI_SYSTEM);
    ck_assert_str_eq(test_errname(orphan.err), "ECANCELED");
    /* Let the worker finish against the dead hub, then do it again with a
     * hub that is alive and resolves normally. */
    struct timespec ts = {0, 800000000};
    nanosleep(&ts, NULL);
    ck_assert_int_eq(orphan.rc, EAI_SYSTEM);
    reset_hook();
    assert_still_resolves();
}
END_TEST

struct ticker {
    double window[5]; /* the largest gap of each 0.5 s window */
    int done;
};

/* A 1 ms ticker for 2.5 s: the largest gap between two ticks in each of
 * five 0.5 s windows. */
static void ticker_task(void *arg)
{
    struct ticker *t = arg;
    double start = usock_now(), last = start, now;

    for (;;) {
        usock_sleep(0.001);
        now = usock_now();
        int w = (int)((now - start) / 0.5);
        if (w >= 5) {
            break;
        }
        if (now - last > t->window[w]) {
            t->window[w] = now - last;
        }
        last = now;
    }
    t->done = 1;
}

/* C07 at the row's figures: 100 lookups at once, each held 2 s by the
 * resolver hook, one cancelled at once; a 1 ms ticker on the same hub
 * keeps its largest gap within the catalog's tolerance (median of five
 * 0.5 s windows: see test_assert_timing).  The cancelled lookup gives
 * ECANCELED and its late result is freed (ASan, valgrind); the first
 * batch of the bounded pool resolves; the ones still queued at 2.5 s are
 * cancelled and give ECANCELED. */
START_TEST(hundred_slow_lookups_with_ticker)
{
    static struct lookup l[LOOKUPS];
    static int ids[LOOKUPS];
    struct ticker t = {{0}, 0};
    char want[64];
    int ok = 0, cancelled = 0;

    set_hook(2.0);
    for (int i = 0; i < LOOKUPS; i++) {
        l[i] = (struct lookup){.host = "localhost", .port = 1000 + i,
                               .rc = -100};
        ids[i] = usock_spawn(lookup_task, &l[i]);
        ck_assert_int_gt(ids[i], 0);
    }
    ck_assert_int_gt(usock_spawn(ticker_task, &t), 0);
    ck_assert_ok(usock_yield());
    ck_assert_ok(usock_cancel(ids[0]));
    wait_flag(&t.done, 10.0);
    ck_assert_int_eq(l[0].done, 1);
    ck_assert_int_eq(l[0].rc, EAI_SYSTEM);
    ck_assert_str_eq(test_errname(l[0].err), "ECANCELED");
    /* 2.5 s in: the lookups still waiting for a worker are cancelled. */
    for (int i = 1; i < LOOKUPS; i++) {
        if (!l[i].done) {
            ck_assert_ok(usock_cancel(ids[i]));
        }
    }
    for (int i = 1; i < LOOKUPS; i++) {
        wait_flag(&l[i].done, 2.0);
        if (l[i].rc == 0) {
            snprintf(want, sizeof want, "127.0.0.1:%d", 1000 + i);
            ck_assert_str_eq(l[i].addr, want);
            ok++;
        } else {
            ck_assert_int_eq(l[i].rc, EAI_SYSTEM);
            ck_assert_str_eq(test_errname(l[i].err), "ECANCELED");
            cancelled++;
        }
    }
    /* The pool's first batch (all its workers but the one still held by
     * the cancelled lookup) resolved; the rest were cancelled. */
    ck_assert_int_ge(ok, 1);
    ck_assert_int_ge(cancelled, 1);
    if (getenv("USOCK_TEST_TIMING") != NULL) {
        fprintf(stderr, "C07: %d resolved, %d cancelled at 2.5 s\n", ok,
                cancelled);
    }
    test_assert_timing("ticker gap", 0.001, TEST_TOL, t.window, 5);
    /* The workers finish the batch they hold; the results are freed. */
    ck_assert_ok(usock_sleep(2.2));
    reset_hook();
    assert_still_resolves();
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, numeric_ipv4);
    tcase_add_test(tc, numeric_ipv6);
    tcase_add_test(tc, localhost_from_hosts);
    tcase_add_test(tc, type_and_family_filters);
    tcase_add_test(tc, no_host_means_loopback_or_any);
    tcase_add_test(tc, family_mismatch);
    tcase_add_test(tc, bad_port);
    tcase_add_test(tc, numerichost_rejects_names);
    tcase_add_test(tc, overlong_names);
    tcase_add_test(tc, unknown_name);
    tcase_add_test(tc, null_res);
    tcase_add_test(tc, lookup_does_not_stall);
    tcase_add_test(tc, cancel_lookup);
    tcase_add_test(tc, deadline_lookup);
    tcase_add_test(tc, many_lookups);
    tcase_add_test(tc, thread_exits_during_lookup);
    tcase_add_test(tc, hundred_slow_lookups_with_ticker);
}

static Suite *resolve_suite(void)
{
    Suite *s = suite_create("resolve");

    add_reactor_tcases(s, "resolve", add_tests, 30);
    return s;
}

int main(void)
{
    return test_main(resolve_suite());
}
