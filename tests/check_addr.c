/*
 * Suite "addr": usock_addr_ip, usock_addr_unix, usock_addr_port and
 * usock_addr_format.  Pure value-type code: no reactor, no task.  Where the
 * kernel is the judge (the length of an abstract name, what getsockname
 * gives back), plain socket(2) calls check our values against it.
 */
#include "config.h"

#include <usocket.h>

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every tcase here is fast; 10 s (times CK_TIMEOUT_MULTIPLIER) is plenty. */
#define TCASE_TIMEOUT 10

#define SUN_PATH_SIZE (sizeof(((struct sockaddr_un *)0)->sun_path))
#define SUN_BASE      (offsetof(struct sockaddr_un, sun_path))

/* Assert that an int-returning call fails with -1 and exactly errno e. */
#define ASSERT_FAILS(expr, e)                                                  \
    do {                                                                       \
        errno = 0;                                                             \
        int rc_ = (expr);                                                      \
        int errno_ = errno;                                                    \
        ck_assert_msg(rc_ == -1 && errno_ == (e),                              \
                      "%s: rc %d errno %d (%s), want -1 %s", #expr, rc_,       \
                      errno_, strerror(errno_), #e);                           \
    } while (0)

/* Assert that usock_addr_format fails with NULL and exactly errno e. */
#define ASSERT_FORMAT_FAILS(a, buf, n, e)                                      \
    do {                                                                       \
        errno = 0;                                                             \
        const char *p_ = usock_addr_format((a), (buf), (n));                   \
        int errno_ = errno;                                                    \
        ck_assert_msg(p_ == NULL && errno_ == (e),                             \
                      "format: %p errno %d (%s), want NULL %s",                \
                      (const void *)p_, errno_, strerror(errno_), #e);         \
    } while (0)

/* pre, then n copies of c, then post, in a static buffer (< 1024 bytes). */
static const char *spell(const char *pre, char c, size_t n, const char *post)
{
    static char s[1024];
    size_t a = strlen(pre), b = strlen(post);

    ck_assert_uint_lt(a + n + b, sizeof s);
    memcpy(s, pre, a);
    memset(s + a, c, n);
    memcpy(s + a + n, post, b + 1);
    return s;
}

/* A string of n copies of c. */
static const char *repeat(char c, size_t n)
{
    return spell("", c, n, "");
}

/* Format a and compare with want. */
static void assert_formats(const usock_addr_t *a, const char *want)
{
    char buf[256];

    ck_assert_ptr_eq(usock_addr_format(a, buf, sizeof buf), buf);
    ck_assert_str_eq(buf, want);
}

/* Parse ip/port, then format and compare with want. */
static void assert_ip_round_trip(const char *ip, int port, const char *want)
{
    usock_addr_t a;

    ck_assert_int_eq(usock_addr_ip(&a, ip, port), 0);
    ck_assert_int_eq(usock_addr_port(&a), port);
    assert_formats(&a, want);
}

/* ========================================================================== */
/*  usock_addr_ip                                                             */
/* ========================================================================== */

START_TEST(ip_v4)
{
    usock_addr_t a;

    ck_assert_int_eq(usock_addr_ip(&a, "10.1.2.3", 8080), 0);
    ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in));
    ck_assert_int_eq(a.u.sa.sa_family, AF_INET);
    ck_assert_uint_eq(a.u.in4.sin_addr.s_addr, htonl(0x0a010203));
    ck_assert_uint_eq(a.u.in4.sin_port, htons(8080));
}
END_TEST

START_TEST(ip_empty_is_any)
{
    usock_addr_t a;

    memset(&a, 0xa5, sizeof a);
    ck_assert_int_eq(usock_addr_ip(&a, "", 53), 0);
    ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in));
    ck_assert_int_eq(a.u.sa.sa_family, AF_INET);
    ck_assert_uint_eq(a.u.in4.sin_addr.s_addr, htonl(INADDR_ANY));
    ck_assert_uint_eq(a.u.in4.sin_port, htons(53));
    /* The struct is zeroed first: nothing of the 0xa5 fill survives. */
    for (size_t i = 0; i < sizeof a.u.in4.sin_zero; i++) {
        ck_assert_int_eq(a.u.in4.sin_zero[i], 0);
    }
}
END_TEST

START_TEST(ip_v6)
{
    usock_addr_t a;
    struct in6_addr want;

    memset(&a, 0xa5, sizeof a);
    ck_assert_int_eq(usock_addr_ip(&a, "2001:db8::7", 443), 0);
    ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in6));
    ck_assert_int_eq(a.u.sa.sa_family, AF_INET6);
    ck_assert_int_eq(inet_pton(AF_INET6, "2001:db8::7", &want), 1);
    ck_assert_mem_eq(&a.u.in6.sin6_addr, &want, sizeof want);
    ck_assert_uint_eq(a.u.in6.sin6_port, htons(443));
    ck_assert_uint_eq(a.u.in6.sin6_scope_id, 0);
    ck_assert_uint_eq(a.u.in6.sin6_flowinfo, 0);
}
END_TEST

START_TEST(ip_v4_mapped_stays_v6)
{
    usock_addr_t a;

    ck_assert_int_eq(usock_addr_ip(&a, "::ffff:1.2.3.4", 1), 0);
    ck_assert_int_eq(a.u.sa.sa_family, AF_INET6);
    ck_assert_uint_eq(a.len, sizeof(struct sockaddr_in6));
}
END_TEST

START_TEST(ip_scope_by_name)
{
    usock_addr_t a;
    unsigned int lo = if_nametoindex("lo");

    ck_assert_uint_ne(lo, 0);
    ck_assert_int_eq(usock_addr_ip(&a, "fe80::1%lo", 80), 0);
    ck_assert_int_eq(a.u.sa.sa_family, AF_INET6);
    ck_assert_uint_eq(a.u.in6.sin6_scope_id, lo);
}
END_TEST

START_TEST(ip_scope_by_number)
{
    usock_addr_t a;

    ck_assert_int_eq(usock_addr_ip(&a, "fe80::1%7", 80), 0);
    ck_assert_uint_eq(a.u.in6.sin6_scope_id, 7);
    ck_assert_int_eq(usock_addr_ip(&a, "fe80::1%4294967295", 80), 0);
    ck_assert_uint_eq(a.u.in6.sin6_scope_id, 4294967295u);
}
END_TEST

START_TEST(ip_port_range)
{
    usock_addr_t a;

    ck_assert_int_eq(usock_addr_ip(&a, "127.0.0.1", 0), 0);
    ck_assert_int_eq(usock_addr_port(&a), 0);
    ck_assert_int_eq(usock_addr_ip(&a, "::1", 65535), 0);
    ck_assert_int_eq(usock_addr_port(&a), 65535);
    ASSERT_FAILS(usock_addr_ip(&a, "127.0.0.1", -1), EINVAL);
    ASSERT_FAILS(usock_addr_ip(&a, "127.0.0.1", 65536), EINVAL);
    ASSERT_FAILS(usock_addr_ip(&a, "::1", INT_MAX), EINVAL);
    ASSERT_FAILS(usock_addr_ip(&a, "::1", INT_MIN), EINVAL);
}
END_TEST

START_TEST(ip_null)
{
    usock_addr_t a;

    ASSERT_FAILS(usock_addr_ip(NULL, "127.0.0.1", 80), EINVAL);
    ASSERT_FAILS(usock_addr_ip(&a, NULL, 80), EINVAL);
}
END_TEST

/* Every one of these is refused with EINVAL and leaves `a` empty. */
static const char *const bad_ips[] = {
    " 127.0.0.1",
    "127.0.0.1 ",
    "[::1]",
    "256.1.1.1",
    "1.2.3.4.5",
    "127.1",
    "0x7f.0.0.1",
    "1.2.3",
    "localhost",
    "::1::2",
    "12345::",
    ":::",
    "1.2.3.4%lo",
    "fe80::1%",
    "%lo",
    "fe80::1%nosuchif0",
    "fe80::1%lo ",
    "fe80::1%4294967296",
    "fe80::1%99999999999999999999",
    "fe80::1%-1",
    "fe80::1%lo%lo",
    "::1 ",
    " ",
    "\t",
    "1.2.3.4\n",
};

START_TEST(ip_malformed)
{
    usock_addr_t a;
    const char *ip = bad_ips[_i];

    memset(&a, 0xa5, sizeof a);
    errno = 0;
    ck_assert_msg(usock_addr_ip(&a, ip, 80) == -1 && errno == EINVAL,
                  "\"%s\" gave errno %d, want EINVAL", ip, errno);
    /* Left empty: every byte zero, not only len and the family. */
    for (size_t i = 0; i < sizeof a; i++) {
        ck_assert_int_eq(((const unsigned char *)&a)[i], 0);
    }
}
END_TEST

START_TEST(ip_too_long)
{
    usock_addr_t a;

    /* A valid address followed by a long scope, a long "address", and an
     * address part longer than INET6_ADDRSTRLEN before a valid scope. */
    ASSERT_FAILS(usock_addr_ip(&a, spell("fe80::1%", 'x', 500, ""), 80),
                 EINVAL);
    ASSERT_FAILS(usock_addr_ip(&a, repeat('1', 500), 80), EINVAL);
    ASSERT_FAILS(usock_addr_ip(&a, spell("", '0', 60, "::1%lo"), 80), EINVAL);
}
END_TEST

/* ========================================================================== */
/*  usock_addr_unix                                                           */
/* ========================================================================== */

START_TEST(unix_path)
{
    usock_addr_t a;

    memset(&a, 0xa5, sizeof a);
    ck_assert_int_eq(usock_addr_unix(&a, "/tmp/x.sock"), 0);
    ck_assert_int_eq(a.u.sa.sa_family, AF_UNIX);
    ck_assert_uint_eq(a.len, SUN_BASE + strlen("/tmp/x.sock") + 1);
    ck_assert_str_eq(a.u.un.sun_path, "/tmp/x.sock");
}
END_TEST

START_TEST(unix_abstract)
{
    usock_addr_t a;

    memset(&a, 0xa5, sizeof a);
    ck_assert_int_eq(usock_addr_unix(&a, "@usock-name"), 0);
    ck_assert_int_eq(a.u.sa.sa_family, AF_UNIX);
    ck_assert_uint_eq(a.len, SUN_BASE + 1 + strlen("usock-name"));
    ck_assert_int_eq(a.u.un.sun_path[0], '\0');
    ck_assert_mem_eq(a.u.un.sun_path + 1, "usock-name", 10);
}
END_TEST

START_TEST(unix_errors)
{
    usock_addr_t a;

    ASSERT_FAILS(usock_addr_unix(NULL, "/tmp/x"), EINVAL);
    ASSERT_FAILS(usock_addr_unix(&a, NULL), EINVAL);
    ASSERT_FAILS(usock_addr_unix(&a, ""), EINVAL);
    ck_assert_uint_eq(a.len, 0);
}
END_TEST

START_TEST(unix_length_limits)
{
    usock_addr_t a;

    /* A path needs room for its NUL: sizeof(sun_path) - 1 bytes fit. */
    ck_assert_int_eq(usock_addr_unix(&a, repeat('p', SUN_PATH_SIZE - 1)), 0);
    ck_assert_uint_eq(a.len, SUN_BASE + SUN_PATH_SIZE);
    ck_assert_int_eq(a.u.un.sun_path[SUN_PATH_SIZE - 1], '\0');
    ASSERT_FAILS(usock_addr_unix(&a, repeat('p', SUN_PATH_SIZE)), ENAMETOOLONG);
    ck_assert_uint_eq(a.len, 0);
    /* An abstract name needs room for the leading NUL instead. */
    ck_assert_int_eq(
        usock_addr_unix(&a, spell("@", 'n', SUN_PATH_SIZE - 1, "")), 0);
    ck_assert_uint_eq(a.len, SUN_BASE + SUN_PATH_SIZE);
    ASSERT_FAILS(usock_addr_unix(&a, spell("@", 'n', SUN_PATH_SIZE, "")),
                 ENAMETOOLONG);
}
END_TEST

/* The kernel agrees with our lengths: bind a plain socket to the address
 * and read it back with getsockname. */
static void assert_kernel_agrees(const char *spec)
{
    usock_addr_t a, back;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(usock_addr_unix(&a, spec), 0);
    ck_assert_msg(bind(fd, &a.u.sa, a.len) == 0, "bind %s: %s", spec,
                  strerror(errno));
    memset(&back, 0, sizeof back);
    back.len = sizeof back.u;
    ck_assert_int_eq(getsockname(fd, &back.u.sa, &back.len), 0);
    ck_assert_uint_eq(back.len, a.len);
    ck_assert_mem_eq(&back.u, &a.u, a.len);
    assert_formats(&back, spec);
    close(fd);
}

START_TEST(unix_kernel_agrees)
{
    char dir[] = "/tmp/check_addr.XXXXXX";
    char path[64], name[64];

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s", dir);
    assert_kernel_agrees(path);
    unlink(path);
    rmdir(dir);
    snprintf(name, sizeof name, "@check_addr.%ld", (long)getpid());
    assert_kernel_agrees(name);
}
END_TEST

/* ========================================================================== */
/*  usock_addr_port                                                           */
/* ========================================================================== */

START_TEST(port_values)
{
    usock_addr_t a;

    ck_assert_int_eq(usock_addr_ip(&a, "1.2.3.4", 4660), 0);
    ck_assert_int_eq(usock_addr_port(&a), 4660);
    ck_assert_int_eq(usock_addr_ip(&a, "fe80::1%lo", 65535), 0);
    ck_assert_int_eq(usock_addr_port(&a), 65535);
}
END_TEST

START_TEST(port_errors)
{
    usock_addr_t a;

    ASSERT_FAILS(usock_addr_port(NULL), EINVAL);
    ck_assert_int_eq(usock_addr_unix(&a, "/tmp/x"), 0);
    ASSERT_FAILS(usock_addr_port(&a), EAFNOSUPPORT);
    memset(&a, 0, sizeof a);
    ASSERT_FAILS(usock_addr_port(&a), EAFNOSUPPORT);
}
END_TEST

/* ========================================================================== */
/*  usock_addr_format                                                         */
/* ========================================================================== */

START_TEST(format_round_trips)
{
    usock_addr_t a;

    assert_ip_round_trip("1.2.3.4", 80, "1.2.3.4:80");
    assert_ip_round_trip("", 0, "0.0.0.0:0");
    assert_ip_round_trip("255.255.255.255", 65535, "255.255.255.255:65535");
    assert_ip_round_trip("::1", 80, "[::1]:80");
    assert_ip_round_trip("::", 0, "[::]:0");
    assert_ip_round_trip("2001:DB8:0:0::7", 9, "[2001:db8::7]:9");
    assert_ip_round_trip("::ffff:1.2.3.4", 1, "[::ffff:1.2.3.4]:1");
    assert_ip_round_trip("fe80::1%lo", 80, "[fe80::1%lo]:80");
    ck_assert_int_eq(usock_addr_unix(&a, "/run/x.sock"), 0);
    assert_formats(&a, "/run/x.sock");
    ck_assert_int_eq(usock_addr_unix(&a, "relative"), 0);
    assert_formats(&a, "relative");
    ck_assert_int_eq(usock_addr_unix(&a, "@abstract"), 0);
    assert_formats(&a, "@abstract");
    ck_assert_int_eq(usock_addr_unix(&a, "@"), 0);
    assert_formats(&a, "@");
}
END_TEST

START_TEST(format_scope_number)
{
    char ip[64];
    unsigned int lo = if_nametoindex("lo");

    /* A numeric scope naming an interface prints the interface name; an
     * index no interface has prints as the number. */
    snprintf(ip, sizeof ip, "fe80::1%%%u", lo);
    assert_ip_round_trip(ip, 80, "[fe80::1%lo]:80");
    assert_ip_round_trip("fe80::1%4000000000", 80, "[fe80::1%4000000000]:80");
}
END_TEST

START_TEST(format_from_kernel)
{
    usock_addr_t a;
    char want[32];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(usock_addr_ip(&a, "127.0.0.1", 0), 0);
    ck_assert_int_eq(bind(fd, &a.u.sa, a.len), 0);
    memset(&a, 0, sizeof a);
    a.len = sizeof a.u;
    ck_assert_int_eq(getsockname(fd, &a.u.sa, &a.len), 0);
    ck_assert_int_gt(usock_addr_port(&a), 0);
    snprintf(want, sizeof want, "127.0.0.1:%d", usock_addr_port(&a));
    assert_formats(&a, want);
    close(fd);
}
END_TEST

START_TEST(format_unix_edge_cases)
{
    usock_addr_t a;
    char buf[SUN_PATH_SIZE + 8];

    /* An unnamed socket (len == offsetof(sun_path)) formats as "". */
    memset(&a, 0, sizeof a);
    a.u.un.sun_family = AF_UNIX;
    a.len = SUN_BASE;
    assert_formats(&a, "");
    /* A full sun_path with no NUL is read only within len. */
    memset(a.u.un.sun_path, 'z', SUN_PATH_SIZE);
    memset((char *)&a.u + sizeof a.u.un, 'X', sizeof a.u - sizeof a.u.un);
    a.len = sizeof a.u.un;
    ck_assert_ptr_eq(usock_addr_format(&a, buf, sizeof buf), buf);
    ck_assert_str_eq(buf, repeat('z', SUN_PATH_SIZE));
}
END_TEST

START_TEST(format_errors)
{
    usock_addr_t a;
    char buf[64];

    ck_assert_int_eq(usock_addr_ip(&a, "1.2.3.4", 80), 0);
    ASSERT_FORMAT_FAILS(NULL, buf, sizeof buf, EINVAL);
    ASSERT_FORMAT_FAILS(&a, NULL, sizeof buf, EINVAL);
    /* n == 0 is "too small" (DESIGN), and nothing is written. */
    buf[0] = 'x';
    ASSERT_FORMAT_FAILS(&a, buf, 0, ENOSPC);
    ck_assert_int_eq(buf[0], 'x');
    /* Empty, unknown family, len too short for the family. */
    memset(&a, 0, sizeof a);
    ASSERT_FORMAT_FAILS(&a, buf, sizeof buf, EINVAL);
    a.u.sa.sa_family = 12345;
    a.len = sizeof a.u.in4;
    ASSERT_FORMAT_FAILS(&a, buf, sizeof buf, EINVAL);
    ck_assert_int_eq(usock_addr_ip(&a, "1.2.3.4", 80), 0);
    a.len = 4;
    ASSERT_FORMAT_FAILS(&a, buf, sizeof buf, EINVAL);
    ck_assert_int_eq(usock_addr_ip(&a, "::1", 80), 0);
    a.len = sizeof(struct sockaddr_in);
    ASSERT_FORMAT_FAILS(&a, buf, sizeof buf, EINVAL);
    a.len = sizeof a.u + 1;
    ASSERT_FORMAT_FAILS(&a, buf, sizeof buf, EINVAL);
}
END_TEST

/* For every n up to the exact length: NULL/ENOSPC, the prefix that fits,
 * NUL-terminated, nothing written past n; n == strlen + 1 succeeds. */
static void assert_enospc(const usock_addr_t *a, const char *want)
{
    size_t len = strlen(want);
    char buf[256];

    for (size_t n = 1; n <= len; n++) {
        memset(buf, 'X', sizeof buf);
        ASSERT_FORMAT_FAILS(a, buf, n, ENOSPC);
        ck_assert_int_eq(buf[n - 1], '\0');
        ck_assert_uint_eq(strlen(buf), n - 1);
        ck_assert_int_eq(strncmp(buf, want, n - 1), 0);
        ck_assert_int_eq(buf[n], 'X');
    }
    memset(buf, 'X', sizeof buf);
    ck_assert_ptr_eq(usock_addr_format(a, buf, len + 1), buf);
    ck_assert_str_eq(buf, want);
    ck_assert_int_eq(buf[len + 1], 'X');
}

START_TEST(format_enospc)
{
    usock_addr_t a;

    ck_assert_int_eq(usock_addr_ip(&a, "1.2.3.4", 80), 0);
    assert_enospc(&a, "1.2.3.4:80");
    ck_assert_int_eq(usock_addr_ip(&a, "::1", 65535), 0);
    assert_enospc(&a, "[::1]:65535");
    ck_assert_int_eq(usock_addr_ip(&a, "fe80::1%lo", 80), 0);
    assert_enospc(&a, "[fe80::1%lo]:80");
    ck_assert_int_eq(usock_addr_unix(&a, "/tmp/some.sock"), 0);
    assert_enospc(&a, "/tmp/some.sock");
    ck_assert_int_eq(usock_addr_unix(&a, "@name"), 0);
    assert_enospc(&a, "@name");
}
END_TEST

/* ========================================================================== */
/*  The suite                                                                 */
/* ========================================================================== */

static TCase *new_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, TCASE_TIMEOUT);
    suite_add_tcase(s, tc);
    return tc;
}

/* The "addr" suite: four tcases, one per function. */
static Suite *addr_suite(void)
{
    Suite *s = suite_create("addr");
    TCase *tc = new_tcase(s, "ip");

    tcase_add_test(tc, ip_v4);
    tcase_add_test(tc, ip_empty_is_any);
    tcase_add_test(tc, ip_v6);
    tcase_add_test(tc, ip_v4_mapped_stays_v6);
    tcase_add_test(tc, ip_scope_by_name);
    tcase_add_test(tc, ip_scope_by_number);
    tcase_add_test(tc, ip_port_range);
    tcase_add_test(tc, ip_null);
    tcase_add_loop_test(tc, ip_malformed, 0,
                        (int)(sizeof bad_ips / sizeof bad_ips[0]));
    tcase_add_test(tc, ip_too_long);
    tc = new_tcase(s, "unix");
    tcase_add_test(tc, unix_path);
    tcase_add_test(tc, unix_abstract);
    tcase_add_test(tc, unix_errors);
    tcase_add_test(tc, unix_length_limits);
    tcase_add_test(tc, unix_kernel_agrees);
    tc = new_tcase(s, "port");
    tcase_add_test(tc, port_values);
    tcase_add_test(tc, port_errors);
    tc = new_tcase(s, "format");
    tcase_add_test(tc, format_round_trips);
    tcase_add_test(tc, format_scope_number);
    tcase_add_test(tc, format_from_kernel);
    tcase_add_test(tc, format_unix_edge_cases);
    tcase_add_test(tc, format_errors);
    tcase_add_test(tc, format_enospc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(addr_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
