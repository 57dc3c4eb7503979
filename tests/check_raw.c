/*
 * Suite "raw": SOCK_RAW sockets: created with CAP_NET_RAW, refused with
 * EPERM without it, an ICMP echo round trip to 127.0.0.1, and the family
 * and type checks of usock_socket.
 */
#include "config.h"

#include <check.h>
#include <grp.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"

#define CAP_NET_RAW_BIT 13

/* ---- helpers ------------------------------------------------------------ */

static void noop(void *arg)
{
    (void)arg;
}

/* Give this thread's hub its reactor, so that blocking calls from here on
 * wait on the reactor under test, not on a plain poll(2). */
static void start_reactor(void)
{
    ck_assert_int_gt(usock_spawn(noop, NULL), 0);
    ck_assert_ok(usock_run());
}

/* 1 when this process has CAP_NET_RAW in its effective set. */
static int have_net_raw(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long eff = 0;

    if (f == NULL) {
        return 0; /* also called while building the suite: no ck_assert */
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "CapEff: %llx", &eff) == 1) {
            break;
        }
    }
    fclose(f);
    return (int)((eff >> CAP_NET_RAW_BIT) & 1);
}

/* The privileged cases are added only when privileged() said so (else
 * they are skipped, and counted as skipped, by raw_suite): here, in the
 * test, a missing privilege is a failure, never an early return that would
 * count as a pass. */
static void assert_privileged(void)
{
    ck_assert_msg(geteuid() == 0 && have_net_raw(),
                  "needs root with CAP_NET_RAW, which the suite found");
}

/* The Internet checksum (RFC 1071) of n bytes. */
static uint16_t inet_checksum(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint32_t sum = 0;

    for (; n > 1; p += 2, n -= 2) {
        sum += (uint32_t)(p[0] << 8 | p[1]);
    }
    if (n == 1) {
        sum += (uint32_t)(p[0] << 8);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return htons((uint16_t)~sum);
}

/* ---- creation and privilege --------------------------------------------- */

START_TEST(raw_privileged)
{
    usock_t *s;

    assert_privileged();
    s = ck_assert_nonnull(usock_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    ck_assert_int_ge(usock_fileno(s), 0);
    ck_assert_ok(usock_close(s));
    s = ck_assert_nonnull(usock_socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6));
    ck_assert_ok(usock_close(s));
}
END_TEST

/* The check, in a child that has dropped its privileges: its exit status
 * is 0 when usock_socket failed with EPERM, 2 when it succeeded, 3 for
 * another errno, 4 when dropping root failed. */
static int unprivileged_child(void)
{
    usock_t *s;

    if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 ||
                           setuid(65534) != 0)) {
        return 4;
    }
    if (geteuid() == 0 || have_net_raw()) {
        return 4;
    }
    errno = 0;
    s = usock_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (s != NULL) {
        return 2;
    }
    return errno == EPERM ? 0 : 3;
}

START_TEST(raw_unprivileged_eperm)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        _exit(unprivileged_child());
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "child died: status %#x", status);
    ck_assert_msg(WEXITSTATUS(status) != 4, "could not drop privileges");
    ck_assert_msg(WEXITSTATUS(status) != 2,
                  "usock_socket(SOCK_RAW) succeeded without CAP_NET_RAW");
    ck_assert_msg(WEXITSTATUS(status) == 0,
                  "usock_socket(SOCK_RAW) without privilege: expected "
                  "EPERM, got another errno (exit %d)",
                  WEXITSTATUS(status));
}
END_TEST

START_TEST(bad_family_type)
{
    ck_assert_errno_null(usock_socket(AF_INET, 99, 0), EINVAL);
    ck_assert_errno_null(usock_socket(AF_PACKET, SOCK_RAW, 0), EAFNOSUPPORT);
    ck_assert_errno_null(usock_socket(AF_PACKET, SOCK_DGRAM, 0),
                         EAFNOSUPPORT);
}
END_TEST

/* ---- ICMP echo ---------------------------------------------------------- */

#define PAYLOAD "usocket raw ping payload"

struct ping {
    usock_t *s;
    uint16_t id, seq;
    int found, skipped_requests, err, done;
    usock_addr_t from;
    char reply[sizeof PAYLOAD];
};

/* Build an echo request of our id/seq into pkt; returns its length. */
static size_t echo_request(const struct ping *p, unsigned char *pkt)
{
    struct icmphdr h = {.type = ICMP_ECHO, .code = 0};
    size_t n = sizeof h + sizeof PAYLOAD;

    h.un.echo.id = htons(p->id);
    h.un.echo.sequence = htons(p->seq);
    memcpy(pkt, &h, sizeof h);
    memcpy(pkt + sizeof h, PAYLOAD, sizeof PAYLOAD);
    h.checksum = inet_checksum(pkt, n);
    memcpy(pkt, &h, sizeof h);
    return n;
}

/* Look at one packet (IP header included): 1 when it is our reply. */
static int is_our_reply(struct ping *p, const unsigned char *pkt, size_t n)
{
    struct icmphdr h;
    size_t ihl;

    if (n < sizeof(struct iphdr) || (pkt[0] >> 4) != 4) {
        return 0;
    }
    ihl = (size_t)(pkt[0] & 0x0f) * 4;
    if (n < ihl + sizeof h) {
        return 0;
    }
    memcpy(&h, pkt + ihl, sizeof h);
    if (ntohs(h.un.echo.id) != p->id || ntohs(h.un.echo.sequence) != p->seq) {
        return 0;
    }
    if (h.type == ICMP_ECHO) {
        p->skipped_requests++; /* our own request, seen on loopback */
        return 0;
    }
    if (h.type != ICMP_ECHOREPLY || h.code != 0 ||
        inet_checksum(pkt + ihl, n - ihl) != 0 ||
        n - ihl - sizeof h != sizeof PAYLOAD) {
        return 0;
    }
    memcpy(p->reply, pkt + ihl + sizeof h, sizeof PAYLOAD);
    return 1;
}

/* Receive until our echo reply comes, for at most 2 s in all. */
static void ping_receive(void *arg)
{
    struct ping *p = arg;
    unsigned char pkt[1024];
    double end = usock_now() + 2.0 * test_mult();

    while (!p->found && usock_now() < end) {
        ssize_t n;

        usock_settimeout(p->s, end - usock_now() > 0 ? end - usock_now() : 0);
        n = usock_recvfrom(p->s, pkt, sizeof pkt, &p->from);
        if (n < 0) {
            p->err = errno;
            break;
        }
        p->found = is_our_reply(p, pkt, (size_t)n);
    }
    p->done = 1;
}

START_TEST(icmp_echo)
{
    struct ping p = {.id = (uint16_t)getpid(), .seq = 4242};
    unsigned char pkt[128];
    usock_addr_t to;
    char text[64];
    int id;

    assert_privileged();
    p.s = ck_assert_nonnull(usock_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    start_reactor();
    /* The receiver waits first, so the reply wakes a parked task. */
    id = usock_spawn(ping_receive, &p);
    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_yield());
    ck_assert_int_eq(p.done, 0);
    ck_assert_ok(usock_addr_ip(&to, "127.0.0.1", 0));
    size_t n = echo_request(&p, pkt);
    ck_assert_count(usock_sendto(p.s, pkt, n, &to), n);
    ck_assert_ok(usock_join(id, 5.0 * test_mult()));
    ck_assert_msg(p.found, "no echo reply: %s", test_errname(p.err));
    ck_assert_mem_eq(p.reply, PAYLOAD, sizeof PAYLOAD);
    ck_assert_int_eq(p.skipped_requests, 1);
    ck_assert_str_eq(usock_addr_format(&p.from, text, sizeof text),
                     "127.0.0.1:0");
}
END_TEST

/* ---- suite -------------------------------------------------------------- */

static int privileged(void)
{
    return geteuid() == 0 && have_net_raw();
}

static void add_tests(TCase *tc)
{
    if (privileged()) {
        tcase_add_test(tc, icmp_echo);
    } else {
        test_skip("raw:icmp_echo", "needs root with CAP_NET_RAW");
    }
}

static Suite *raw_suite(void)
{
    Suite *s = suite_create("raw");
    TCase *tc = tcase_create("raw-create");

    /* Reactor-independent: socket creation only. */
    if (privileged()) {
        tcase_add_test(tc, raw_privileged);
    } else {
        test_skip("raw:raw_privileged", "needs root with CAP_NET_RAW");
    }
    tcase_add_test(tc, raw_unprivileged_eperm);
    tcase_add_test(tc, bad_family_type);
    tcase_set_timeout(tc, 10);
    suite_add_tcase(s, tc);
    add_reactor_tcases(s, "raw", add_tests, 20);
    return s;
}

int main(void)
{
    return test_main(raw_suite());
}
