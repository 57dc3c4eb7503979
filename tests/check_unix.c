/*
 * Suite "unix": AF_UNIX stream and datagram sockets on filesystem paths (in
 * a private mkdtemp directory) and Linux abstract names: names and their
 * formatting, echo, readline, timeouts, close under a waiter, and 1 MiB
 * through an echo task.
 */
#include "config.h"

#include <check.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"

#define ADDR_MAX 256

/* The tcase's scratch directory: made and removed by an unchecked fixture
 * (in the runner, so it goes away even when a test fails). */
static char tmpdir[64];

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/usock-unix-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("check_unix: mkdtemp");
        abort(); /* not inside a test: no ck_assert */
    }
}

static void remove_tmpdir(void)
{
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

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

/* A filesystem address tmpdir/name. */
static void path_addr(usock_addr_t *a, char *path, size_t n, const char *name)
{
    ck_assert_int_lt(snprintf(path, n, "%s/%s", tmpdir, name), (int)n);
    ck_assert_ok(usock_addr_unix(a, path));
}

/* An abstract address "@usock-<tag>-<pid>-<count>", unique to this call
 * (also when CK_FORK=no runs every test in one process). */
static void abstract_addr(usock_addr_t *a, char *name, size_t n,
                          const char *tag)
{
    static int count;

    snprintf(name, n, "@usock-%s-%ld-%d", tag, (long)getpid(), ++count);
    ck_assert_ok(usock_addr_unix(a, name));
}

static void assert_formats(const usock_addr_t *a, const char *want)
{
    char buf[ADDR_MAX];

    ck_assert_ptr_nonnull(usock_addr_format(a, buf, sizeof buf));
    ck_assert_str_eq(buf, want);
}

static usock_t *unix_listener(const usock_addr_t *a)
{
    usock_t *l = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));

    ck_assert_ok(usock_bind(l, a));
    ck_assert_ok(usock_listen(l, 16));
    return l;
}

/* A connected AF_UNIX stream pair through a listener on `a`. */
static void unix_pair(const usock_addr_t *a, usock_t **client,
                      usock_t **server)
{
    usock_t *l = unix_listener(a);
    usock_t *c = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));

    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_ok(usock_connect(c, a));
    ck_assert_ok(usock_settimeout(l, 5.0));
    *server = ck_assert_nonnull(usock_accept(l, NULL));
    ck_assert_ok(usock_close(l));
    *client = c;
}

/* An echo task: recv and sendall back until end of stream, then close. */
static void echo_task(void *arg)
{
    usock_t *s = arg;
    static char buf[16384];
    ssize_t n;

    while ((n = usock_recv(s, buf, sizeof buf)) > 0) {
        if (usock_sendall(s, buf, (size_t)n) < 0) {
            break;
        }
    }
    usock_close(s);
}

/* Send text on c and read the same bytes back (the peer echoes). */
static void echo_round(usock_t *c, const char *text)
{
    size_t n = strlen(text);
    char buf[128];

    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_ok(usock_sendall(c, text, n));
    ck_assert_count(usock_read(c, buf, n), n);
    ck_assert_mem_eq(buf, text, n);
}

/* End the echo: our end of stream makes the echo task close its socket,
 * which is our end of stream; then the task is joined and c closed. */
static void end_echo(usock_t *c, int id)
{
    char buf[16];

    ck_assert_ok(usock_shutdown(c, SHUT_WR));
    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_count(usock_recv(c, buf, sizeof buf), 0);
    ck_assert_ok(usock_join(id, 5.0));
    ck_assert_ok(usock_close(c));
}

/* ---- stream on a path --------------------------------------------------- */

START_TEST(stream_path)
{
    char path[128];
    usock_addr_t a, name, peer;
    usock_t *l, *c, *srv;
    int id;

    path_addr(&a, path, sizeof path, "stream.sock");
    assert_formats(&a, path);
    start_reactor();
    l = unix_listener(&a);
    ck_assert_ok(usock_getsockname(l, &name));
    assert_formats(&name, path);
    c = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));
    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_ok(usock_connect(c, &a));
    ck_assert_ok(usock_settimeout(l, 5.0));
    srv = ck_assert_nonnull(usock_accept(l, &peer));
    assert_formats(&peer, ""); /* the client is unnamed */
    ck_assert_ok(usock_getpeername(c, &name));
    assert_formats(&name, path);
    ck_assert_ok(usock_getsockname(srv, &name));
    assert_formats(&name, path);
    ck_assert_ok(usock_getsockname(c, &name));
    assert_formats(&name, "");
    id = usock_spawn(echo_task, srv);
    ck_assert_int_gt(id, 0);
    echo_round(c, "hello over a path\n");
    echo_round(c, "and again");
    end_echo(c, id);
}
END_TEST

/* The longest path that fits (sizeof sun_path - 1 bytes) binds, and comes
 * back from getsockname whole. */
START_TEST(stream_longest_path)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    usock_addr_t a, name;
    usock_t *l;
    size_t n = strlen(tmpdir);

    memset(path, 'p', sizeof path);
    memcpy(path, tmpdir, n);
    path[n] = '/';
    path[sizeof path - 1] = '\0';
    ck_assert_ok(usock_addr_unix(&a, path));
    l = unix_listener(&a);
    ck_assert_ok(usock_getsockname(l, &name));
    assert_formats(&name, path);
    ck_assert_ok(usock_close(l));
}
END_TEST

/* ---- abstract names ----------------------------------------------------- */

START_TEST(abstract_stream)
{
    char name[64];
    usock_addr_t a, got;
    usock_t *l, *c, *srv;
    int id;

    abstract_addr(&a, name, sizeof name, "as");
    assert_formats(&a, name);
    start_reactor();
    l = unix_listener(&a);
    ck_assert_ok(usock_getsockname(l, &got));
    assert_formats(&got, name);
    /* The name is exactly "\0usock-as-<pid>", no trailing NUL counted, as
     * other programs (Python's "\0name", socat) spell it. */
    ck_assert_int_eq(got.len, offsetof(struct sockaddr_un, sun_path) +
                                  strlen(name));
    ck_assert_int_eq(got.len, a.len);
    ck_assert_mem_eq(&got.u.un, &a.u.un, a.len);
    /* A freshly built address of the same name reaches the listener. */
    ck_assert_ok(usock_addr_unix(&got, name));
    c = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));
    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_ok(usock_connect(c, &got));
    ck_assert_ok(usock_settimeout(l, 5.0));
    srv = ck_assert_nonnull(usock_accept(l, NULL));
    ck_assert_ok(usock_getpeername(c, &got));
    assert_formats(&got, name);
    id = usock_spawn(echo_task, srv);
    ck_assert_int_gt(id, 0);
    echo_round(c, "abstract hello");
    end_echo(c, id);
    /* No file was made for it. */
    ck_assert_int_ne(access(name + 1, F_OK), 0);
}
END_TEST

START_TEST(abstract_dgram)
{
    char an[64], bn[64], buf[32];
    usock_addr_t aa, ba, from;
    usock_t *a = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_DGRAM, 0));
    usock_t *b = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_DGRAM, 0));

    abstract_addr(&aa, an, sizeof an, "da");
    abstract_addr(&ba, bn, sizeof bn, "db");
    ck_assert_ok(usock_bind(a, &aa));
    ck_assert_ok(usock_bind(b, &ba));
    start_reactor();
    ck_assert_count(usock_sendto(a, "abstract dgram", 14, &ba), 14);
    ck_assert_ok(usock_settimeout(b, 5.0));
    ck_assert_count(usock_recvfrom(b, buf, sizeof buf, &from), 14);
    ck_assert_mem_eq(buf, "abstract dgram", 14);
    assert_formats(&from, an);
    ck_assert_count(usock_sendto(b, "back", 4, &from), 4);
    ck_assert_ok(usock_settimeout(a, 5.0));
    ck_assert_count(usock_recvfrom(a, buf, sizeof buf, &from), 4);
    assert_formats(&from, bn);
}
END_TEST

/* ---- datagrams on paths ------------------------------------------------- */

START_TEST(dgram_path)
{
    char sp[128], rp[128], buf[32];
    usock_addr_t sa, ra, from;
    usock_t *s = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_DGRAM, 0));
    usock_t *r = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_DGRAM, 0));

    path_addr(&sa, sp, sizeof sp, "sender.sock");
    path_addr(&ra, rp, sizeof rp, "receiver.sock");
    ck_assert_ok(usock_bind(s, &sa));
    ck_assert_ok(usock_bind(r, &ra));
    start_reactor();
    ck_assert_count(usock_sendto(s, "from a path", 11, &ra), 11);
    ck_assert_count(usock_sendto(s, "", 0, &ra), 0);
    ck_assert_ok(usock_settimeout(r, 5.0));
    ck_assert_count(usock_recvfrom(r, buf, sizeof buf, &from), 11);
    ck_assert_mem_eq(buf, "from a path", 11);
    assert_formats(&from, sp);
    /* A 0-byte datagram is one too, not an end of stream. */
    ck_assert_count(usock_recvfrom(r, buf, sizeof buf, &from), 0);
    assert_formats(&from, sp);
    /* Truncation as for UDP: the rest of the datagram is dropped. */
    ck_assert_count(usock_sendto(s, "0123456789", 10, &ra), 10);
    ck_assert_count(usock_sendto(s, "next", 4, &ra), 4);
    ck_assert_count(usock_recvfrom(r, buf, 3, NULL), 3);
    ck_assert_mem_eq(buf, "012", 3);
    ck_assert_count(usock_recvfrom(r, buf, sizeof buf, NULL), 4);
    ck_assert_mem_eq(buf, "next", 4);
    /* An unbound sender is unnamed: "" as accept gives for a client. */
    usock_t *u = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_DGRAM, 0));
    ck_assert_count(usock_sendto(u, "anon", 4, &ra), 4);
    ck_assert_count(usock_recvfrom(r, buf, sizeof buf, &from), 4);
    ck_assert_mem_eq(buf, "anon", 4);
    ck_assert_int_eq(from.u.sa.sa_family, AF_UNIX);
    assert_formats(&from, "");
    ck_assert_ok(usock_close(u));
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

START_TEST(name_too_long)
{
    char p[sizeof(((struct sockaddr_un *)0)->sun_path) + 2];
    usock_addr_t a;
    size_t room = sizeof a.u.un.sun_path;

    memset(p, 'x', sizeof p);
    p[room] = '\0'; /* room chars: no space left for the NUL */
    ck_assert_errno(usock_addr_unix(&a, p), ENAMETOOLONG);
    ck_assert_int_eq(a.len, 0);
    p[room - 1] = '\0'; /* room - 1 chars: fits */
    ck_assert_ok(usock_addr_unix(&a, p));
    assert_formats(&a, p);

    /* "@" + room chars does not fit either; "@" + room - 1 does. */
    memset(p, 'x', sizeof p);
    p[0] = '@';
    p[room + 1] = '\0';
    ck_assert_errno(usock_addr_unix(&a, p), ENAMETOOLONG);
    p[room] = '\0';
    ck_assert_ok(usock_addr_unix(&a, p));
    assert_formats(&a, p);

    ck_assert_errno(usock_addr_unix(&a, ""), EINVAL);
    ck_assert_errno(usock_addr_unix(&a, NULL), EINVAL);
    ck_assert_errno(usock_addr_unix(NULL, "/tmp/x"), EINVAL);
}
END_TEST

START_TEST(connect_no_listener)
{
    char path[128], name[64];
    usock_addr_t a;
    usock_t *c = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));
    usock_t *b = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_STREAM, 0));

    start_reactor();
    ck_assert_ok(usock_settimeout(c, 5.0));
    path_addr(&a, path, sizeof path, "nobody.sock");
    ck_assert_errno(usock_connect(c, &a), ENOENT);

    /* Bound but not listening. */
    path_addr(&a, path, sizeof path, "deaf.sock");
    ck_assert_ok(usock_bind(b, &a));
    ck_assert_errno(usock_connect(c, &a), ECONNREFUSED);

    abstract_addr(&a, name, sizeof name, "nobody");
    ck_assert_errno(usock_connect(c, &a), ECONNREFUSED);
}
END_TEST

/* ---- readline ----------------------------------------------------------- */

START_TEST(readline_unix)
{
    char path[128], line[64];
    usock_addr_t a;
    usock_t *c, *srv;

    path_addr(&a, path, sizeof path, "lines.sock");
    unix_pair(&a, &c, &srv);
    ck_assert_ok(usock_settimeout(c, 5.0));
    test_send_after(srv, 0.05, "line one\nline ", 14);
    test_send_after(srv, 0.15, "two\nta", 6);
    test_send_after(srv, 0.25, "il", 2);
    test_send_after(srv, 0.35, NULL, 0); /* shutdown(SHUT_WR) */
    ck_assert_count(usock_readline(c, line, sizeof line), 9);
    ck_assert_str_eq(line, "line one\n");
    ck_assert_count(usock_readline(c, line, sizeof line), 9);
    ck_assert_str_eq(line, "line two\n");
    ck_assert_count(usock_readline(c, line, sizeof line), 4);
    ck_assert_str_eq(line, "tail");
    ck_assert_count(usock_readline(c, line, sizeof line), 0);
}
END_TEST

/* ---- timeouts ----------------------------------------------------------- */

static void timeouts_once(void)
{
    char path[128], buf[16];
    usock_addr_t a, da;
    usock_t *c, *srv;
    usock_t *d = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_DGRAM, 0));
    double t0;

    path_addr(&a, path, sizeof path, "timeout.sock");
    unlink(path);
    unix_pair(&a, &c, &srv);
    ck_assert_ok(usock_settimeout(c, 0));
    t0 = usock_now();
    ck_assert_errno(usock_recv(c, buf, sizeof buf), EAGAIN);
    ck_assert_duration(t0, 0.0, 0.0);
    ck_assert_ok(usock_settimeout(c, 0.2));
    t0 = usock_now();
    ck_assert_errno(usock_recv(c, buf, sizeof buf), ETIMEDOUT);
    ck_assert_duration(t0, 0.2, 0.2 + 0.5);

    path_addr(&da, path, sizeof path, "timeout-dgram.sock");
    unlink(path);
    ck_assert_ok(usock_bind(d, &da));
    ck_assert_ok(usock_settimeout(d, 0.2));
    t0 = usock_now();
    ck_assert_errno(usock_recvfrom(d, buf, sizeof buf, NULL), ETIMEDOUT);
    ck_assert_duration(t0, 0.2, 0.2 + 0.5);
    ck_assert_ok(usock_close(c));
    ck_assert_ok(usock_close(srv));
    ck_assert_ok(usock_close(d));
}

START_TEST(recv_timeouts)
{
    timeouts_once(); /* no task yet: the plain wait */
    start_reactor();
    timeouts_once();
}
END_TEST

/* ---- close under a waiter ----------------------------------------------- */

struct dgram_waiter {
    usock_t *s;
    ssize_t rc;
    int err, done;
};

static void dgram_wait_task(void *arg)
{
    struct dgram_waiter *w = arg;
    char buf[16];

    errno = 0;
    w->rc = usock_recvfrom(w->s, buf, sizeof buf, NULL);
    w->err = w->rc < 0 ? errno : 0;
    w->done = 1;
}

START_TEST(close_under_waiter)
{
    char path[128], name[64];
    usock_addr_t a, da;
    usock_t *c, *srv;
    struct test_op op = {.kind = TEST_RECV, .n = 16};
    struct dgram_waiter w = {0};
    int id;

    path_addr(&a, path, sizeof path, "close.sock");
    unix_pair(&a, &c, &srv);
    op.s = c;
    test_spawn_op(&op);
    w.s = ck_assert_nonnull(usock_socket(AF_UNIX, SOCK_DGRAM, 0));
    abstract_addr(&da, name, sizeof name, "close");
    ck_assert_ok(usock_bind(w.s, &da));
    id = usock_spawn(dgram_wait_task, &w);
    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_int_eq(op.done, 0);
    ck_assert_int_eq(w.done, 0);
    ck_assert_ok(usock_close(c));
    ck_assert_ok(usock_close(w.s));
    test_wait_op(&op, 2.0);
    ck_assert_ok(usock_join(id, 2.0 * test_mult()));
    ck_assert_msg(op.rc == -1 && op.err == EBADF, "recv: %zd %s", op.rc,
                  test_errname(op.err));
    ck_assert_msg(w.rc == -1 && w.err == EBADF, "recvfrom: %zd %s", w.rc,
                  test_errname(w.err));
}
END_TEST

/* ---- 1 MiB through an echo task ----------------------------------------- */

#define BIG (1 << 20)

struct writer {
    usock_t *s;
    const char *data;
    int rc, err;
};

static void writer_task(void *arg)
{
    struct writer *w = arg;

    w->rc = usock_sendall(w->s, w->data, BIG);
    w->err = w->rc < 0 ? errno : 0;
    usock_shutdown(w->s, SHUT_WR);
}

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    }
    return h;
}

START_TEST(echo_1mib)
{
    char path[128], extra;
    usock_addr_t a;
    usock_t *c, *srv;
    char *out = malloc(BIG), *in = malloc(BIG);
    struct writer w = {0};
    uint32_t x = 2463534242u;
    int id, echo;

    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(in);
    for (size_t i = 0; i < BIG; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        out[i] = (char)x;
    }
    path_addr(&a, path, sizeof path, "big.sock");
    unix_pair(&a, &c, &srv);
    echo = usock_spawn(echo_task, srv);
    ck_assert_int_gt(echo, 0);
    w = (struct writer){.s = c, .data = out};
    id = usock_spawn(writer_task, &w);
    ck_assert_int_gt(id, 0);
    ck_assert_ok(usock_settimeout(c, 20.0 * test_mult()));
    ck_assert_count(usock_read(c, in, BIG), BIG);
    ck_assert_count(usock_recv(c, &extra, 1), 0); /* then end of stream */
    ck_assert_ok(usock_join(id, 5.0));
    ck_assert_ok(usock_join(echo, 5.0));
    ck_assert_ok(usock_close(c));
    ck_assert_msg(w.rc == 0, "sendall: %s", test_errname(w.err));
    ck_assert(fnv1a(in, BIG) == fnv1a(out, BIG));
    ck_assert_mem_eq(in, out, BIG);
    free(out);
    free(in);
}
END_TEST

/* ---- suite -------------------------------------------------------------- */

static void add_tests(TCase *tc)
{
    tcase_add_unchecked_fixture(tc, make_tmpdir, remove_tmpdir);
    tcase_add_test(tc, stream_path);
    tcase_add_test(tc, stream_longest_path);
    tcase_add_test(tc, abstract_stream);
    tcase_add_test(tc, abstract_dgram);
    tcase_add_test(tc, dgram_path);
    tcase_add_test(tc, connect_no_listener);
    tcase_add_test(tc, readline_unix);
    tcase_add_test(tc, recv_timeouts);
    tcase_add_test(tc, close_under_waiter);
    tcase_add_test(tc, echo_1mib);
}

static Suite *unix_suite(void)
{
    Suite *s = suite_create("unix");
    TCase *tc = tcase_create("unix-addr");

    /* Reactor-independent: address construction only. */
    tcase_add_test(tc, name_too_long);
    tcase_set_timeout(tc, 10);
    suite_add_tcase(s, tc);
    add_reactor_tcases(s, "unix", add_tests, 30);
    return s;
}

int main(void)
{
    return test_main(unix_suite());
}
