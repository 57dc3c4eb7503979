/*
 * Suite "udp": datagram sockets over IPv4 and IPv6 loopback: addresses of
 * senders, connected datagram sockets, truncation, empty datagrams,
 * timeouts, sizes, ICMP errors, bad addresses, SO_BROADCAST, multicast in a
 * private network namespace, and many senders at once.
 */
#include "config.h"

#include <check.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"

#define ADDR_MAX 160

/* ---- helpers ------------------------------------------------------------ */

static void noop(void *arg)
{
    (void)arg;
}

/* Give this thread's hub its reactor (a task needs one), so that blocking
 * calls from here on wait on the reactor under test, not on a plain
 * poll(2). */
static void start_reactor(void)
{
    ck_assert_int_gt(usock_spawn(noop, NULL), 0);
    ck_assert_ok(usock_run());
}

static const char *loopback(int family)
{
    return family == AF_INET6 ? "::1" : "127.0.0.1";
}

/* A datagram socket bound to the loopback address of `family`, port 0; its
 * address goes to *bound. */
static usock_t *udp_bound(int family, usock_addr_t *bound)
{
    usock_t *s = ck_assert_nonnull(usock_socket(family, SOCK_DGRAM, 0));
    usock_addr_t a;

    ck_assert_ok(usock_addr_ip(&a, loopback(family), 0));
    ck_assert_ok(usock_bind(s, &a));
    ck_assert_ok(usock_getsockname(s, bound));
    ck_assert_int_gt(usock_addr_port(bound), 0);
    return s;
}

/* Assert that two addresses format to the same string. */
static void assert_same_addr(const usock_addr_t *got,
                             const usock_addr_t *want)
{
    char g[ADDR_MAX], w[ADDR_MAX];

    ck_assert_ptr_nonnull(usock_addr_format(got, g, sizeof g));
    ck_assert_ptr_nonnull(usock_addr_format(want, w, sizeof w));
    ck_assert_str_eq(g, w);
}

/* Receive one datagram on s (timeout 5 s) and check its bytes and sender. */
static void expect_dgram(usock_t *s, const void *data, size_t n,
                         const usock_addr_t *sender)
{
    char buf[512];
    usock_addr_t from;

    ck_assert_ok(usock_settimeout(s, 5.0));
    ck_assert_count(usock_recvfrom(s, buf, sizeof buf, &from), n);
    ck_assert_mem_eq(buf, data, n);
    if (sender != NULL) {
        assert_same_addr(&from, sender);
    }
}

/* A UDP port nothing is bound to (bound, then closed). */
static void closed_port(int family, usock_addr_t *a)
{
    usock_t *s = udp_bound(family, a);

    ck_assert_ok(usock_close(s));
}

/* ---- exchange ----------------------------------------------------------- */

static void exchange(int family)
{
    usock_addr_t aa, ba;
    usock_t *a = udp_bound(family, &aa);
    usock_t *b = udp_bound(family, &ba);
    char text[ADDR_MAX], want[ADDR_MAX];

    ck_assert_count(usock_sendto(b, "hello", 5, &aa), 5);
    expect_dgram(a, "hello", 5, &ba);
    ck_assert_count(usock_sendto(a, "back", 4, &ba), 4);
    expect_dgram(b, "back", 4, &aa);

    /* The formatted sender is "127.0.0.1:port" / "[::1]:port". */
    snprintf(want, sizeof want,
             family == AF_INET6 ? "[::1]:%d" : "127.0.0.1:%d",
             usock_addr_port(&ba));
    ck_assert_str_eq(usock_addr_format(&ba, text, sizeof text), want);
    ck_assert_ok(usock_close(a));
    ck_assert_ok(usock_close(b));
}

START_TEST(exchange_v4)
{
    exchange(AF_INET);
    start_reactor();
    exchange(AF_INET);
}
END_TEST

START_TEST(exchange_v6)
{
    exchange(AF_INET6);
    start_reactor();
    exchange(AF_INET6);
}
END_TEST

START_TEST(connected_send_recv)
{
    usock_addr_t aa, ba, ca, peer;
    usock_t *a = udp_bound(AF_INET, &aa);
    usock_t *b = udp_bound(AF_INET, &ba);
    usock_t *c = udp_bound(AF_INET, &ca);
    char buf[16];

    start_reactor();
    ck_assert_ok(usock_connect(a, &ba));
    ck_assert_ok(usock_connect(b, &aa));
    ck_assert_ok(usock_getpeername(b, &peer));
    assert_same_addr(&peer, &aa);
    ck_assert_count(usock_send(b, "ping", 4), 4);
    ck_assert_ok(usock_settimeout(a, 5.0));
    ck_assert_count(usock_recv(a, buf, sizeof buf), 4);
    ck_assert_mem_eq(buf, "ping", 4);
    ck_assert_count(usock_send(a, "pong!", 5), 5);
    expect_dgram(b, "pong!", 5, &aa);

    /* A connected datagram socket hears only its peer. */
    ck_assert_count(usock_sendto(c, "intruder", 8, &aa), 8);
    ck_assert_count(usock_send(b, "mine", 4), 4);
    ck_assert_count(usock_recv(a, buf, sizeof buf), 4);
    ck_assert_mem_eq(buf, "mine", 4);
    ck_assert_ok(usock_settimeout(a, 0));
    ck_assert_errno(usock_recv(a, buf, sizeof buf), EAGAIN);
}
END_TEST

START_TEST(recvfrom_null_from)
{
    usock_addr_t aa, ba;
    usock_t *a = udp_bound(AF_INET, &aa);
    usock_t *b = udp_bound(AF_INET, &ba);
    char buf[16];

    start_reactor();
    ck_assert_count(usock_sendto(b, "anon", 4, &aa), 4);
    ck_assert_ok(usock_settimeout(a, 5.0));
    ck_assert_count(usock_recvfrom(a, buf, sizeof buf, NULL), 4);
    ck_assert_mem_eq(buf, "anon", 4);
}
END_TEST

/* DESIGN: a datagram larger than the buffer is truncated as recvfrom(2)
 * does; the rest of that datagram is dropped, the next call gets the next
 * datagram. */
START_TEST(truncation)
{
    usock_addr_t aa, ba, from;
    usock_t *a = udp_bound(AF_INET, &aa);
    usock_t *b = udp_bound(AF_INET, &ba);
    char big[100], buf[200];

    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (char)('A' + i % 26);
    }
    start_reactor();
    ck_assert_count(usock_sendto(b, big, sizeof big, &aa), sizeof big);
    ck_assert_count(usock_sendto(b, "second", 6, &aa), 6);
    ck_assert_count(usock_sendto(b, big, sizeof big, &aa), sizeof big);
    ck_assert_count(usock_sendto(b, "fourth", 6, &aa), 6);
    ck_assert_ok(usock_settimeout(a, 5.0));
    ck_assert_count(usock_recvfrom(a, buf, 10, &from), 10);
    ck_assert_mem_eq(buf, big, 10);
    assert_same_addr(&from, &ba);
    ck_assert_count(usock_recvfrom(a, buf, sizeof buf, &from), 6);
    ck_assert_mem_eq(buf, "second", 6);
    /* usock_recv truncates the same way. */
    ck_assert_count(usock_recv(a, buf, 7), 7);
    ck_assert_mem_eq(buf, big, 7);
    ck_assert_count(usock_recv(a, buf, sizeof buf), 6);
    ck_assert_mem_eq(buf, "fourth", 6);
    ck_assert_ok(usock_settimeout(a, 0));
    ck_assert_errno(usock_recvfrom(a, buf, sizeof buf, NULL), EAGAIN);
}
END_TEST

/* B11: a 0-byte datagram is sent and received as such, not as EOF. */
START_TEST(zero_length_datagram)
{
    usock_addr_t aa, ba, from;
    usock_t *a = udp_bound(AF_INET, &aa);
    usock_t *b = udp_bound(AF_INET, &ba);
    char buf[16];

    start_reactor();
    ck_assert_count(usock_sendto(b, "", 0, &aa), 0);
    ck_assert_count(usock_sendto(b, NULL, 0, &aa), 0);
    ck_assert_count(usock_sendto(b, "after", 5, &aa), 5);
    ck_assert_ok(usock_settimeout(a, 5.0));
    ck_assert_count(usock_recvfrom(a, buf, sizeof buf, &from), 0);
    assert_same_addr(&from, &ba);
    ck_assert_count(usock_recvfrom(a, buf, sizeof buf, &from), 0);
    assert_same_addr(&from, &ba);
    ck_assert_count(usock_recvfrom(a, buf, sizeof buf, &from), 5);
    ck_assert_mem_eq(buf, "after", 5);
    /* recv of 0 bytes returns 0 at once, even with nothing queued. */
    ck_assert_ok(usock_settimeout(a, USOCK_NONE));
    ck_assert_count(usock_recv(a, buf, 0), 0);
}
END_TEST

/* ---- timeouts (T03, T08) ------------------------------------------------ */

static void timeouts_once(void)
{
    usock_addr_t aa;
    usock_t *a = udp_bound(AF_INET, &aa);
    char buf[16];
    double t0;

    ck_assert_ok(usock_settimeout(a, 0));
    t0 = usock_now();
    ck_assert_errno(usock_recvfrom(a, buf, sizeof buf, NULL), EAGAIN);
    ck_assert_errno(usock_recv(a, buf, sizeof buf), EAGAIN);
    ck_assert_duration(t0, 0.0, 0.0);

    ck_assert_ok(usock_settimeout(a, 0.2));
    t0 = usock_now();
    ck_assert_errno(usock_recvfrom(a, buf, sizeof buf, NULL), ETIMEDOUT);
    ck_assert_duration(t0, 0.2, 0.2 + 0.5);
    ck_assert_ok(usock_close(a));
}

START_TEST(recvfrom_timeouts)
{
    timeouts_once(); /* no task yet: the plain wait */
    start_reactor();
    timeouts_once();
}
END_TEST

/* T08 at the row's 1.5 s, on the reactor. */
START_TEST(recvfrom_timeout_long)
{
    usock_addr_t aa;
    usock_t *a;
    char buf[16];
    double t0;

    start_reactor();
    a = udp_bound(AF_INET, &aa);
    ck_assert_ok(usock_settimeout(a, 1.5));
    t0 = usock_now();
    ck_assert_errno(usock_recvfrom(a, buf, sizeof buf, NULL), ETIMEDOUT);
    ck_assert_duration(t0, 1.5, 1.5 + 0.5);
    ck_assert_ok(usock_close(a));
}
END_TEST

struct receiver {
    usock_t *s;
    ssize_t rc;
    int err, done;
    double took;
    char buf[64];
    usock_addr_t from;
};

static void receiver_task(void *arg)
{
    struct receiver *r = arg;
    double t0 = usock_now();

    errno = 0;
    r->rc = usock_recvfrom(r->s, r->buf, sizeof r->buf, &r->from);
    r->err = r->rc < 0 ? errno : 0;
    r->took = usock_now() - t0;
    r->done = 1;
}

struct sender {
    usock_t *s;
    usock_addr_t to;
    double delay;
};

static void sender_task(void *arg)
{
    struct sender *sd = arg;

    if (usock_sleep(sd->delay) == 0) {
        usock_sendto(sd->s, "wake up", 7, &sd->to);
    }
}

START_TEST(blocked_recvfrom_wakes)
{
    usock_addr_t aa, ba;
    struct receiver r = {0};
    struct sender sd = {.delay = 0.2};
    int rt, st;

    r.s = udp_bound(AF_INET, &aa);
    sd.s = udp_bound(AF_INET, &ba);
    sd.to = aa;
    ck_assert_ok(usock_settimeout(r.s, 5.0));
    rt = usock_spawn(receiver_task, &r);
    st = usock_spawn(sender_task, &sd);
    ck_assert_int_gt(rt, 0);
    ck_assert_int_gt(st, 0);
    ck_assert_ok(usock_join(rt, 5.0 * test_mult()));
    ck_assert_ok(usock_join(st, 1.0));
    ck_assert_msg(r.done && r.rc == 7, "recvfrom: %zd %s", r.rc,
                  test_errname(r.err));
    ck_assert_mem_eq(r.buf, "wake up", 7);
    assert_same_addr(&r.from, &ba);
    /* It really waited for the sender, and woke soon after it sent. */
    ck_assert_double_ge(r.took, 0.2 - 1e-3);
    ck_assert_double_le(r.took, 0.2 + 1.0 * test_mult());
}
END_TEST

/* ---- sizes (B14) -------------------------------------------------------- */

START_TEST(sizes)
{
    usock_addr_t aa, ba, a6, b6;
    usock_t *a = udp_bound(AF_INET, &aa);
    usock_t *b = udp_bound(AF_INET, &ba);
    usock_t *s6 = udp_bound(AF_INET6, &a6);
    usock_t *t6 = udp_bound(AF_INET6, &b6);
    size_t max = 65507;
    char *out = malloc(70000), *in = malloc(70000);

    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(in);
    for (size_t i = 0; i < 70000; i++) {
        out[i] = (char)(i * 7 + i / 251);
    }
    start_reactor();
    ck_assert_errno(usock_sendto(b, out, 70000, &aa), EMSGSIZE);
    ck_assert_errno(usock_sendto(t6, out, 70000, &a6), EMSGSIZE);
    ck_assert_count(usock_sendto(b, out, max, &aa), max);
    ck_assert_errno(usock_sendto(b, out, max + 1, &aa), EMSGSIZE);
    ck_assert_ok(usock_settimeout(a, 5.0));
    ck_assert_count(usock_recvfrom(a, in, 70000, NULL), max);
    ck_assert_mem_eq(in, out, max);
    /* Nothing else came: the too-big ones were not sent in part. */
    ck_assert_ok(usock_settimeout(a, 0));
    ck_assert_errno(usock_recvfrom(a, in, 70000, NULL), EAGAIN);
    ck_assert_ok(usock_settimeout(s6, 0));
    ck_assert_errno(usock_recvfrom(s6, in, 70000, NULL), EAGAIN);
    free(out);
    free(in);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

/* F07: connected UDP to a closed port: the ICMP error is ECONNREFUSED. */
static void refused_after_send(int family)
{
    usock_addr_t closed, ba;
    usock_t *b = udp_bound(family, &ba);
    char buf[16];
    double t0;

    closed_port(family, &closed);
    ck_assert_ok(usock_connect(b, &closed));
    ck_assert_count(usock_send(b, "anyone?", 7), 7);
    ck_assert_ok(usock_settimeout(b, 1.0));
    t0 = usock_now();
    ck_assert_errno(usock_recv(b, buf, sizeof buf), ECONNREFUSED);
    ck_assert_duration(t0, 0.0, 0.5);
}

START_TEST(connrefused)
{
    refused_after_send(AF_INET);
    refused_after_send(AF_INET6);
    start_reactor();
    refused_after_send(AF_INET);
    refused_after_send(AF_INET6);
}
END_TEST

static void recv_task(void *arg)
{
    struct receiver *r = arg;

    errno = 0;
    r->rc = usock_recv(r->s, r->buf, sizeof r->buf);
    r->err = r->rc < 0 ? errno : 0;
    r->done = 1;
}

/* The error arrives while a task is already parked in recv: the reactor
 * must wake it (an error event, not readability). */
START_TEST(connrefused_wakes_waiter)
{
    usock_addr_t closed, ba;
    struct receiver r = {0};
    int id;

    r.s = udp_bound(AF_INET, &ba);
    closed_port(AF_INET, &closed);
    ck_assert_ok(usock_connect(r.s, &closed));
    ck_assert_ok(usock_settimeout(r.s, 1.0));
    id = usock_spawn(recv_task, &r);
    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_int_eq(r.done, 0);
    ck_assert_count(usock_send(r.s, "anyone?", 7), 7);
    ck_assert_ok(usock_join(id, 2.0 * test_mult()));
    ck_assert_msg(r.rc == -1 && r.err == ECONNREFUSED,
                  "recv: expected -1 ECONNREFUSED, got %zd %s", r.rc,
                  test_errname(r.err));
}
END_TEST

START_TEST(listen_accept_eopnotsupp)
{
    usock_addr_t aa;
    usock_t *a = udp_bound(AF_INET, &aa);

    ck_assert_errno(usock_listen(a, 5), EOPNOTSUPP);
    ck_assert_errno(usock_listen(a, -1), EOPNOTSUPP);
    ck_assert_errno_null(usock_accept(a, NULL), EOPNOTSUPP);
    ck_assert_errno_null(usock_accept(a, &aa), EOPNOTSUPP);
}
END_TEST

/* Assert that expr fails with -1 and errno EAFNOSUPPORT or EINVAL. */
#define assert_afnosupport_or_inval(expr)                                     \
    do {                                                                      \
        errno = 0;                                                            \
        long rc_ = (long)(expr);                                              \
        int e_ = errno;                                                       \
        ck_assert_msg(rc_ == -1 && (e_ == EAFNOSUPPORT || e_ == EINVAL),      \
                      "%s: expected -1 EAFNOSUPPORT or EINVAL, got %ld %s",   \
                      #expr, rc_, test_errname(e_));                          \
    } while (0)

/* B04: NULL, empty, foreign and garbage addresses. */
START_TEST(sendto_bad_addresses)
{
    usock_addr_t aa, v6, bad, empty;
    usock_t *a = udp_bound(AF_INET, &aa);
    usock_t *b = ck_assert_nonnull(usock_socket(AF_INET, SOCK_DGRAM, 0));

    ck_assert_errno(usock_sendto(b, "x", 1, NULL), EINVAL);
    memset(&empty, 0, sizeof empty);
    ck_assert_errno(usock_sendto(b, "x", 1, &empty), EINVAL);
    ck_assert_ok(usock_addr_ip(&v6, "::1", usock_addr_port(&aa)));
    assert_afnosupport_or_inval(usock_sendto(b, "x", 1, &v6));
    bad = aa;
    bad.u.sa.sa_family = 12345;
    assert_afnosupport_or_inval(usock_sendto(b, "x", 1, &bad));
    bad = aa;
    bad.len = 3;
    assert_afnosupport_or_inval(usock_sendto(b, "x", 1, &bad));
    bad = aa;
    bad.len = sizeof bad.u + 1;
    ck_assert_errno(usock_sendto(b, "x", 1, &bad), EINVAL);
    ck_assert_errno(usock_sendto(NULL, "x", 1, &aa), EINVAL);
    ck_assert_errno(usock_sendto(b, NULL, 1, &aa), EINVAL);

    /* None of them sent anything. */
    ck_assert_ok(usock_settimeout(a, 0));
    ck_assert_errno(usock_recvfrom(a, (char[8]){0}, 8, NULL), EAGAIN);
}
END_TEST

/* ---- SO_BROADCAST ------------------------------------------------------- */

START_TEST(broadcast)
{
    usock_addr_t any, bound, bcast;
    usock_t *s = ck_assert_nonnull(usock_socket(AF_INET, SOCK_DGRAM, 0));
    int v = -1;
    socklen_t len = sizeof v;

    ck_assert_ok(usock_addr_ip(&any, "", 0));
    ck_assert_ok(usock_bind(s, &any));
    ck_assert_ok(usock_getsockname(s, &bound));
    ck_assert_ok(usock_addr_ip(&bcast, "127.255.255.255",
                               usock_addr_port(&bound)));
    start_reactor();
    ck_assert_ok(usock_getsockopt(s, SOL_SOCKET, SO_BROADCAST, &v, &len));
    ck_assert_int_eq(v, 0);
    ck_assert_errno(usock_sendto(s, "all", 3, &bcast), EACCES);

    ck_assert_ok(usock_setsockopt_int(s, SOL_SOCKET, SO_BROADCAST, 1));
    v = -1;
    len = sizeof v;
    ck_assert_ok(usock_getsockopt(s, SOL_SOCKET, SO_BROADCAST, &v, &len));
    ck_assert_int_eq(len, sizeof v);
    ck_assert_int_ne(v, 0);
    ck_assert_count(usock_sendto(s, "all", 3, &bcast), 3);

    ck_assert_ok(usock_setsockopt_int(s, SOL_SOCKET, SO_BROADCAST, 0));
    ck_assert_errno(usock_sendto(s, "all", 3, &bcast), EACCES);
}
END_TEST

/* ---- multicast, in a private network namespace --------------------------- */

/* Move this (forked) test process into a network namespace of its own, then
 * run the ip(8) commands in `setup`.  The cases that call it are added only
 * when test_can_unshare_net() said it is permitted (else they are skipped,
 * and counted as skipped, by add_netns_tests): a refusal here is a failure,
 * never an early return that would count as a pass. */
static void private_netns(const char *setup)
{
    ck_assert_msg(unshare(CLONE_NEWNET) == 0, "unshare(CLONE_NEWNET): %s",
                  strerror(errno));
    ck_assert_msg(system(setup) == 0, "failed: %s", setup);
}

/* A listener bound to the wildcard address of `family`, port 0, that only
 * hears the groups it joined (IP_MULTICAST_ALL / IPV6_MULTICAST_ALL 0), so
 * that the membership is what the test depends on. */
static usock_t *group_listener(int family, usock_addr_t *bound)
{
    usock_t *l = ck_assert_nonnull(usock_socket(family, SOCK_DGRAM, 0));
    usock_addr_t any;

    if (family == AF_INET6) {
        ck_assert_ok(usock_setsockopt_int(l, IPPROTO_IPV6,
                                          IPV6_MULTICAST_ALL, 0));
    } else {
        ck_assert_ok(usock_setsockopt_int(l, IPPROTO_IP, IP_MULTICAST_ALL, 0));
    }
    ck_assert_ok(usock_addr_ip(&any, family == AF_INET6 ? "::" : "", 0));
    ck_assert_ok(usock_bind(l, &any));
    ck_assert_ok(usock_getsockname(l, bound));
    return l;
}

/* Send `msg` to the group; the listener gets it from the sender's address,
 * or (member == 0) gets nothing within 0.3 s. */
static void group_send(usock_t *s, const usock_addr_t *sa, usock_t *l,
                       const usock_addr_t *group, const char *msg, int member)
{
    size_t n = strlen(msg);
    char buf[64];

    ck_assert_count(usock_sendto(s, msg, n, group), n);
    if (member) {
        expect_dgram(l, msg, n, sa);
        return;
    }
    ck_assert_ok(usock_settimeout(l, 0.3));
    ck_assert_errno(usock_recvfrom(l, buf, sizeof buf, NULL), ETIMEDOUT);
}

/* IPv4: 239.1.2.3 on the loopback interface, routed there. */
START_TEST(multicast_v4)
{
    usock_addr_t lport, group, sa;
    struct in_addr ifaddr = {.s_addr = htonl(INADDR_LOOPBACK)};
    struct ip_mreqn mr = {.imr_address.s_addr = htonl(INADDR_LOOPBACK)};
    usock_t *l, *s;
    int v = 0;
    socklen_t len = sizeof v;

    private_netns("ip link set lo up && ip link set lo multicast on"
                  " && ip route add 224.0.0.0/4 dev lo");
    l = group_listener(AF_INET, &lport);
    ck_assert_int_eq(inet_pton(AF_INET, "239.1.2.3", &mr.imr_multiaddr), 1);
    mr.imr_ifindex = (int)if_nametoindex("lo");
    ck_assert_int_gt(mr.imr_ifindex, 0);
    s = udp_bound(AF_INET, &sa);
    ck_assert_ok(usock_setsockopt(s, IPPROTO_IP, IP_MULTICAST_IF, &ifaddr,
                                  sizeof ifaddr));
    ck_assert_ok(usock_setsockopt_int(s, IPPROTO_IP, IP_MULTICAST_LOOP, 1));
    ck_assert_ok(usock_getsockopt(s, IPPROTO_IP, IP_MULTICAST_LOOP, &v, &len));
    ck_assert_int_eq(v, 1);
    ck_assert_ok(usock_addr_ip(&group, "239.1.2.3", usock_addr_port(&lport)));
    start_reactor();
    group_send(s, &sa, l, &group, "not yet a member", 0);
    ck_assert_ok(usock_setsockopt(l, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr,
                                  sizeof mr));
    group_send(s, &sa, l, &group, "to the group", 1);
    ck_assert_ok(usock_setsockopt(l, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mr,
                                  sizeof mr));
    group_send(s, &sa, l, &group, "left the group", 0);
}
END_TEST

/*
 * IPv6: ff15::1234.  Linux does not loop IPv6 multicast back on lo itself
 * (ip6_finish_output2 skips the loop-back copy on a loopback device, and
 * the packet then has no neighbour to go to), so the group lives on one
 * end of a veth pair, as on a real NIC.
 */
START_TEST(multicast_v6)
{
    usock_addr_t lport, group, sa, src;
    struct ipv6_mreq mr = {0};
    usock_t *l, *s;
    int ifi, v = 0;
    socklen_t len = sizeof v;

    private_netns("ip link set lo up"
                  " && ip link add uv0 type veth peer name uv1"
                  " && ip link set uv1 up && ip link set uv0 up"
                  " && ip -6 addr add fd00::1/64 dev uv0 nodad");
    ifi = (int)if_nametoindex("uv0");
    ck_assert_int_gt(ifi, 0);
    l = group_listener(AF_INET6, &lport);
    ck_assert_int_eq(inet_pton(AF_INET6, "ff15::1234", &mr.ipv6mr_multiaddr),
                     1);
    mr.ipv6mr_interface = (unsigned int)ifi;
    s = ck_assert_nonnull(usock_socket(AF_INET6, SOCK_DGRAM, 0));
    ck_assert_ok(usock_addr_ip(&src, "fd00::1", 0));
    ck_assert_ok(usock_bind(s, &src));
    ck_assert_ok(usock_getsockname(s, &sa));
    ck_assert_ok(usock_setsockopt_int(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, ifi));
    ck_assert_ok(usock_setsockopt_int(s, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 1));
    ck_assert_ok(usock_getsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, &v,
                                  &len));
    ck_assert_int_eq(v, ifi);
    ck_assert_ok(usock_addr_ip(&group, "ff15::1234", usock_addr_port(&lport)));
    start_reactor();
    group_send(s, &sa, l, &group, "not yet a member", 0);
    ck_assert_ok(usock_setsockopt(l, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mr,
                                  sizeof mr));
    group_send(s, &sa, l, &group, "to the v6 group", 1);
    ck_assert_ok(usock_setsockopt(l, IPPROTO_IPV6, IPV6_LEAVE_GROUP, &mr,
                                  sizeof mr));
    group_send(s, &sa, l, &group, "left the v6 group", 0);
}
END_TEST

/* ---- many senders ------------------------------------------------------- */

#define NSENDERS 10
#define PER_SENDER 10

struct flood {
    usock_t *rx;
    usock_addr_t rx_addr;
    usock_t *tx[NSENDERS];
    usock_addr_t tx_addr[NSENDERS];
    int sent[NSENDERS];
    int seen[NSENDERS][PER_SENDER];
    int got, bad, rx_err;
};

struct flood_sender {
    struct flood *f;
    int id;
};

static void flood_send(void *arg)
{
    struct flood_sender *fs = arg;
    struct flood *f = fs->f;

    for (int i = 0; i < PER_SENDER; i++) {
        unsigned char msg[64] = {(unsigned char)fs->id, (unsigned char)i};

        if (usock_sendto(f->tx[fs->id], msg, sizeof msg, &f->rx_addr) ==
            (ssize_t)sizeof msg) {
            f->sent[fs->id]++;
        }
        usock_yield();
    }
}

/* Check that datagram msg (n bytes, from `from`) is a new, genuine one. */
static void flood_mark(struct flood *f, const unsigned char *msg, ssize_t n,
                       const usock_addr_t *from)
{
    int id = msg[0], seq = msg[1];

    if (n != 64 || id >= NSENDERS || seq >= PER_SENDER ||
        usock_addr_port(from) != usock_addr_port(&f->tx_addr[id]) ||
        f->seen[id][seq]++ != 0) {
        f->bad++;
    }
}

static void flood_receive(void *arg)
{
    struct flood *f = arg;
    unsigned char msg[128];
    usock_addr_t from;

    usock_settimeout(f->rx, 5.0 * test_mult());
    while (f->got < NSENDERS * PER_SENDER) {
        ssize_t n = usock_recvfrom(f->rx, msg, sizeof msg, &from);
        if (n < 0) {
            f->rx_err = errno;
            return;
        }
        flood_mark(f, msg, n, &from);
        f->got++;
    }
}

START_TEST(many_senders)
{
    static struct flood f;
    struct flood_sender fs[NSENDERS];
    int rx, tx[NSENDERS];

    memset(&f, 0, sizeof f);
    f.rx = udp_bound(AF_INET, &f.rx_addr);
    ck_assert_ok(usock_setsockopt_int(f.rx, SOL_SOCKET, SO_RCVBUF, 1 << 20));
    rx = usock_spawn(flood_receive, &f);
    ck_assert_int_gt(rx, 0);
    for (int i = 0; i < NSENDERS; i++) {
        f.tx[i] = udp_bound(AF_INET, &f.tx_addr[i]);
        fs[i] = (struct flood_sender){&f, i};
        tx[i] = usock_spawn(flood_send, &fs[i]);
        ck_assert_int_gt(tx[i], 0);
    }
    ck_assert_ok(usock_join(rx, 10.0 * test_mult()));
    for (int i = 0; i < NSENDERS; i++) {
        ck_assert_ok(usock_join(tx[i], 1.0));
        ck_assert_int_eq(f.sent[i], PER_SENDER);
    }
    ck_assert_msg(f.rx_err == 0, "receiver: %s", test_errname(f.rx_err));
    ck_assert_int_eq(f.got, NSENDERS * PER_SENDER);
    ck_assert_int_eq(f.bad, 0);
}
END_TEST

/* ---- suite -------------------------------------------------------------- */

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, exchange_v4);
    tcase_add_test(tc, exchange_v6);
    tcase_add_test(tc, connected_send_recv);
    tcase_add_test(tc, recvfrom_null_from);
    tcase_add_test(tc, truncation);
    tcase_add_test(tc, zero_length_datagram);
    tcase_add_test(tc, recvfrom_timeouts);
    tcase_add_test(tc, recvfrom_timeout_long);
    tcase_add_test(tc, blocked_recvfrom_wakes);
    tcase_add_test(tc, sizes);
    tcase_add_test(tc, connrefused);
    tcase_add_test(tc, connrefused_wakes_waiter);
    tcase_add_test(tc, sendto_bad_addresses);
    tcase_add_test(tc, broadcast);
    tcase_add_test(tc, many_senders);
}

/* These enter a network namespace: they need fork mode (tag "netns"). */
static void add_netns_tests(TCase *tc)
{
    tcase_set_tags(tc, "netns");
    if (!test_can_unshare_net()) {
        test_skip("udp-netns:multicast_v4, multicast_v6",
                  "unshare(CLONE_NEWNET) not permitted (needs root / "
                  "CAP_SYS_ADMIN)");
        return;
    }
    if (system("command -v ip >/dev/null 2>&1") != 0) {
        test_skip("udp-netns:multicast_v4, multicast_v6",
                  "ip(8) is not installed (package iproute2)");
        return;
    }
    tcase_add_test(tc, multicast_v4);
    tcase_add_test(tc, multicast_v6);
}

static Suite *udp_suite(void)
{
    Suite *s = suite_create("udp");
    TCase *tc = tcase_create("udp-plain");

    /* Reactor-independent: nothing here waits. */
    tcase_add_test(tc, listen_accept_eopnotsupp);
    tcase_set_timeout(tc, 10);
    suite_add_tcase(s, tc);
    add_reactor_tcases(s, "udp", add_tests, 30);
    add_reactor_tcases(s, "udp-netns", add_netns_tests, 30);
    return s;
}

int main(void)
{
    return test_main(udp_suite());
}
