/*
 * Suite "stream": usock_read and usock_readline, line splitting, and
 * "nothing is lost" on timeout and cancel.
 */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"

/* A pair whose server side is bounded by a 5 s deadline on the caller. */
static void pair(usock_t **c, usock_t **s)
{
    test_pair(c, s);
    usock_setdeadline(usock_now() + 5.0 * test_mult());
}

struct dribble {
    usock_t *s;
    const char *data;
    size_t n, chunk;
    int close_after;
};

/* Send data in chunks of `chunk` bytes, 1 ms apart. */
static void dribble_task(void *arg)
{
    struct dribble *d = arg;

    for (size_t i = 0; i < d->n; i += d->chunk) {
        size_t k = d->n - i < d->chunk ? d->n - i : d->chunk;

        if (usock_sleep(0.001) != 0 || usock_sendall(d->s, d->data + i, k)) {
            return;
        }
    }
    if (d->close_after) {
        usock_shutdown(d->s, SHUT_WR);
    }
}

static void spawn_dribble(struct dribble *d)
{
    ck_assert_int_gt(usock_spawn(dribble_task, d), 0);
}

/* ---- read --------------------------------------------------------------- */

START_TEST(read_exact)
{
    static const char msg[] = "hello, world";
    struct dribble d = {NULL, msg, sizeof msg - 1, 1, 1};
    usock_t *c, *s;
    char buf[32];

    pair(&c, &s);
    d.s = c;
    spawn_dribble(&d);
    ck_assert_count(usock_read(s, buf, 5), 5);
    ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
    /* Fewer than n only at end of stream. */
    ck_assert_count(usock_read(s, buf, sizeof buf), 7);
    ck_assert_int_eq(memcmp(buf, ", world", 7), 0);
    ck_assert_count(usock_read(s, buf, sizeof buf), 0);
    ck_assert_count(usock_read(s, buf, 1), 0);
}
END_TEST

START_TEST(read_timeout_keeps_bytes)
{
    usock_t *c, *s;
    char buf[16];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "abc", 3));
    ck_assert_ok(usock_settimeout(s, 0.2));
    ck_assert_errno(usock_read(s, buf, 10), ETIMEDOUT);
    ck_assert_errno(usock_read(s, buf, 10), ETIMEDOUT);
    ck_assert_count(usock_recv(s, buf, sizeof buf), 3);
    ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
    /* Once more, completed by later bytes. */
    ck_assert_ok(usock_sendall(c, "abc", 3));
    ck_assert_errno(usock_read(s, buf, 10), ETIMEDOUT);
    ck_assert_ok(usock_sendall(c, "defghij", 7));
    ck_assert_count(usock_read(s, buf, 10), 10);
    ck_assert_int_eq(memcmp(buf, "abcdefghij", 10), 0);
}
END_TEST

START_TEST(read_eagain_keeps_bytes)
{
    usock_t *c, *s;
    char buf[16];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "xyz", 3));
    ck_assert_ok(usock_sleep(0.02));
    ck_assert_ok(usock_settimeout(s, 0));
    ck_assert_errno(usock_read(s, buf, 10), EAGAIN);
    ck_assert_count(usock_read(s, buf, 3), 3);
    ck_assert_int_eq(memcmp(buf, "xyz", 3), 0);
}
END_TEST

START_TEST(read_deadline_keeps_bytes)
{
    usock_t *c, *s;
    char buf[16];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "12345", 5));
    usock_setdeadline(usock_now() + 0.1);
    ck_assert_errno(usock_read(s, buf, 10), ETIMEDOUT);
    usock_setdeadline(usock_now() + 2.0);
    ck_assert_ok(usock_shutdown(c, SHUT_WR));
    ck_assert_count(usock_read(s, buf, 10), 5);
    ck_assert_int_eq(memcmp(buf, "12345", 5), 0);
}
END_TEST

START_TEST(read_cancel_keeps_bytes)
{
    struct test_op r = {.kind = TEST_READ, .n = 10};
    usock_t *c, *s;
    char buf[16];
    int id;

    pair(&c, &s);
    r.s = s;
    ck_assert_ok(usock_sendall(c, "abc", 3));
    id = test_spawn_op(&r);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_int_eq(r.done, 0);
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 1.0));
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(test_errname(r.err), "ECANCELED");
    ck_assert_ok(usock_sendall(c, "defghij", 7));
    ck_assert_count(usock_read(s, buf, 10), 10);
    ck_assert_int_eq(memcmp(buf, "abcdefghij", 10), 0);
}
END_TEST

/* An error (a reset) after some bytes came in loses none of them. */
START_TEST(read_error_keeps_bytes)
{
    struct linger lg = {1, 0};
    struct test_op r = {.kind = TEST_READ, .n = 10};
    usock_t *c, *s;
    char buf[16];

    pair(&c, &s);
    r.s = s;
    ck_assert_ok(usock_sendall(c, "abc", 3));
    test_spawn_op(&r);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_int_eq(r.done, 0);
    ck_assert_ok(usock_setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    ck_assert_ok(usock_close(c));
    test_wait_op(&r, 1.0);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_str_eq(test_errname(r.err), "ECONNRESET");
    ck_assert_count(usock_recv(s, buf, sizeof buf), 3);
    ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
}
END_TEST

/* ---- readline ----------------------------------------------------------- */

START_TEST(readline_lines)
{
    usock_t *c, *s;
    char buf[64];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "one\ntwo\n\nthree\n", 15));
    ck_assert_count(usock_readline(s, buf, sizeof buf), 4);
    ck_assert_str_eq(buf, "one\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 4);
    ck_assert_str_eq(buf, "two\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 1);
    ck_assert_str_eq(buf, "\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 6);
    ck_assert_str_eq(buf, "three\n");
}
END_TEST

START_TEST(readline_n_zero)
{
    usock_t *c, *s;
    char buf[4];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "ab\n", 3));
    ck_assert_errno(usock_readline(s, buf, 0), EINVAL);
    /* n 1 holds only the NUL: EINVAL, never 0 (end of stream) with data
     * pending. */
    ck_assert_errno(usock_readline(s, buf, 1), EINVAL);
    ck_assert_count(usock_readline(s, buf, sizeof buf), 3);
    ck_assert_str_eq(buf, "ab\n");
}
END_TEST

START_TEST(readline_n_two)
{
    usock_t *c, *s;
    char buf[2];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "ab\nc", 4));
    ck_assert_ok(usock_shutdown(c, SHUT_WR));
    ck_assert_count(usock_readline(s, buf, 2), 1);
    ck_assert_str_eq(buf, "a");
    ck_assert_count(usock_readline(s, buf, 2), 1);
    ck_assert_str_eq(buf, "b");
    ck_assert_count(usock_readline(s, buf, 2), 1);
    ck_assert_str_eq(buf, "\n");
    ck_assert_count(usock_readline(s, buf, 2), 1);
    ck_assert_str_eq(buf, "c");
    ck_assert_count(usock_readline(s, buf, 2), 0);
}
END_TEST

/* A 100-byte line read with n = 10 comes in 9-byte pieces. */
START_TEST(readline_long_line_pieces)
{
    char line[101], got[128], buf[10];
    usock_t *c, *s;
    size_t len = 0;
    ssize_t n;
    int pieces = 0;

    for (int i = 0; i < 99; i++) {
        line[i] = (char)('a' + i % 26);
    }
    line[99] = '\n';
    line[100] = '\0';
    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, line, 100));
    ck_assert_ok(usock_sendall(c, "next\n", 5));
    while (len < 100) {
        n = usock_readline(s, buf, sizeof buf);
        ck_assert_int_gt(n, 0);
        ck_assert_uint_eq(strlen(buf), (size_t)n);
        if (len + (size_t)n < 100) {
            ck_assert_int_eq(n, 9);
            ck_assert_ptr_null(memchr(buf, '\n', (size_t)n));
        }
        memcpy(got + len, buf, (size_t)n);
        len += (size_t)n;
        pieces++;
    }
    ck_assert_uint_eq(len, 100);
    ck_assert_int_eq(pieces, 12);
    ck_assert_int_eq(memcmp(got, line, 100), 0);
    ck_assert_count(usock_readline(s, buf, sizeof buf), 5);
    ck_assert_str_eq(buf, "next\n");
}
END_TEST

/* S02: lengths at the buffer size and one either side. */
START_TEST(readline_lengths_at_limit)
{
    usock_t *c, *s;
    char buf[8];

    pair(&c, &s);
    /* n-2, n-1 and n bytes with the newline, n = 8. */
    ck_assert_ok(usock_sendall(c, "abcde\nabcdef\nabcdefg\n", 21));
    ck_assert_count(usock_readline(s, buf, sizeof buf), 6);
    ck_assert_str_eq(buf, "abcde\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 7);
    ck_assert_str_eq(buf, "abcdef\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 7);
    ck_assert_str_eq(buf, "abcdefg");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 1);
    ck_assert_str_eq(buf, "\n");
}
END_TEST

START_TEST(readline_split_sends)
{
    static const char text[] = "hello world\nsecond line\nthird\n";
    struct dribble d = {NULL, text, sizeof text - 1, 1, 0};
    usock_t *c, *s;
    char buf[64];

    pair(&c, &s);
    d.s = c;
    spawn_dribble(&d);
    ck_assert_count(usock_readline(s, buf, sizeof buf), 12);
    ck_assert_str_eq(buf, "hello world\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 12);
    ck_assert_str_eq(buf, "second line\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 6);
    ck_assert_str_eq(buf, "third\n");
}
END_TEST

START_TEST(readline_crlf_split)
{
    usock_t *c, *s;
    char buf[64];

    pair(&c, &s);
    test_send_after(c, 0.0, "abc\r", 4);
    test_send_after(c, 0.05, "\ndef\r", 5);
    test_send_after(c, 0.1, "\n", 1);
    ck_assert_count(usock_readline(s, buf, sizeof buf), 5);
    ck_assert_str_eq(buf, "abc\r\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 5);
    ck_assert_str_eq(buf, "def\r\n");
}
END_TEST

START_TEST(readline_nul_bytes)
{
    usock_t *c, *s;
    char buf[16];

    pair(&c, &s);
    memset(buf, 'Z', sizeof buf);
    ck_assert_ok(usock_sendall(c, "a\0b\n\0\n", 6));
    ck_assert_count(usock_readline(s, buf, sizeof buf), 4);
    ck_assert_int_eq(memcmp(buf, "a\0b\n\0", 5), 0);
    ck_assert_count(usock_readline(s, buf, sizeof buf), 2);
    ck_assert_int_eq(memcmp(buf, "\0\n\0", 3), 0);
}
END_TEST

START_TEST(readline_eof_tail)
{
    usock_t *c, *s;
    char buf[16];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "x\ntail", 6));
    ck_assert_ok(usock_close(c));
    ck_assert_count(usock_readline(s, buf, sizeof buf), 2);
    ck_assert_str_eq(buf, "x\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 4);
    ck_assert_str_eq(buf, "tail");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 0);
}
END_TEST

START_TEST(readline_timeout_keeps_bytes)
{
    usock_t *c, *s;
    char buf[16];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "abc", 3));
    ck_assert_ok(usock_settimeout(s, 0.2));
    ck_assert_errno(usock_readline(s, buf, sizeof buf), ETIMEDOUT);
    ck_assert_count(usock_recv(s, buf, sizeof buf), 3);
    ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
    /* And a timed-out half line is completed by the next call. */
    ck_assert_ok(usock_sendall(c, "half", 4));
    ck_assert_errno(usock_readline(s, buf, sizeof buf), ETIMEDOUT);
    ck_assert_ok(usock_sendall(c, " done\n", 6));
    ck_assert_count(usock_readline(s, buf, sizeof buf), 10);
    ck_assert_str_eq(buf, "half done\n");
}
END_TEST

START_TEST(readline_cancel_keeps_bytes)
{
    struct test_op a = {.kind = TEST_READLINE, .n = 64};
    struct test_op b = {.kind = TEST_READLINE, .n = 64};
    usock_t *c, *s;
    int id;

    pair(&c, &s);
    a.s = b.s = s;
    ck_assert_ok(usock_sendall(c, "hal", 3));
    id = test_spawn_op(&a);
    ck_assert_ok(usock_sleep(0.05));
    ck_assert_int_eq(a.done, 0);
    ck_assert_ok(usock_cancel(id));
    ck_assert_ok(usock_join(id, 1.0));
    ck_assert_int_eq(a.rc, -1);
    ck_assert_str_eq(test_errname(a.err), "ECANCELED");
    test_spawn_op(&b);
    ck_assert_ok(usock_sendall(c, "f line\n", 7));
    test_wait_op(&b, 2.0);
    ck_assert_int_eq(b.rc, 10);
    ck_assert_str_eq(b.buf, "half line\n");
}
END_TEST

/* ---- the socket's own buffer comes first -------------------------------- */

START_TEST(mix_recv_readline)
{
    usock_t *c, *s;
    char buf[64];

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "line1\nrest-of-data", 18));
    ck_assert_ok(usock_sleep(0.02));
    ck_assert_count(usock_readline(s, buf, sizeof buf), 6);
    ck_assert_str_eq(buf, "line1\n");
    ck_assert_count(usock_recv(s, buf, 4), 4);
    ck_assert_int_eq(memcmp(buf, "rest", 4), 0);
    ck_assert_count(usock_read(s, buf, 8), 8);
    ck_assert_int_eq(memcmp(buf, "-of-data", 8), 0);
    ck_assert_ok(usock_sendall(c, "xyz\nabc\n", 8));
    ck_assert_count(usock_read(s, buf, 2), 2);
    ck_assert_int_eq(memcmp(buf, "xy", 2), 0);
    ck_assert_count(usock_readline(s, buf, sizeof buf), 2);
    ck_assert_str_eq(buf, "z\n");
    ck_assert_count(usock_readline(s, buf, sizeof buf), 4);
    ck_assert_str_eq(buf, "abc\n");
}
END_TEST

START_TEST(buffered_bytes_need_no_wait)
{
    usock_t *c, *s;
    char buf[64];
    double t0;

    pair(&c, &s);
    ck_assert_ok(usock_sendall(c, "l1\nl2\nl3\n", 9));
    ck_assert_ok(usock_sleep(0.02));
    ck_assert_count(usock_readline(s, buf, sizeof buf), 3);
    /* Whatever readline read ahead is served without the kernel. */
    t0 = usock_now();
    ck_assert_ok(usock_settimeout(s, 0));
    ck_assert_count(usock_read(s, buf, 3), 3);
    ck_assert_int_eq(memcmp(buf, "l2\n", 3), 0);
    ck_assert_ok(usock_settimeout(s, USOCK_NONE));
    ck_assert_count(usock_recv(s, buf, sizeof buf), 3);
    ck_assert_int_eq(memcmp(buf, "l3\n", 3), 0);
    ck_assert_duration(t0, 0, 0.05);
}
END_TEST

/* ---- S01: no newline at all --------------------------------------------- */

static unsigned char pattern(size_t i)
{
    unsigned char b = (unsigned char)(i * 31 + (i >> 12));

    return b == '\n' ? 'n' : b;
}

struct bulk {
    usock_t *s;
    unsigned char *data;
    size_t n;
};

static void bulk_task(void *arg)
{
    struct bulk *b = arg;

    if (usock_sendall(b->s, b->data, b->n) == 0) {
        usock_shutdown(b->s, SHUT_WR);
    }
}

START_TEST(readline_no_newline_megabyte)
{
    enum { N = 4096 };
    struct bulk b = {NULL, NULL, 1u << 20};
    char buf[N];
    usock_t *c, *s;
    size_t got = 0;
    ssize_t n;

    b.data = malloc(b.n);
    ck_assert_ptr_nonnull(b.data);
    for (size_t i = 0; i < b.n; i++) {
        b.data[i] = pattern(i);
    }
    pair(&c, &s);
    b.s = c;
    ck_assert_int_gt(usock_spawn(bulk_task, &b), 0);
    while ((n = usock_readline(s, buf, N)) > 0) {
        if (got + (size_t)n < b.n) {
            ck_assert_int_eq(n, N - 1);
        }
        ck_assert_int_eq(buf[n], '\0');
        ck_assert_int_eq(memcmp(buf, b.data + got, (size_t)n), 0);
        got += (size_t)n;
    }
    ck_assert_int_eq(n, 0);
    ck_assert_uint_eq(got, b.n);
    free(b.data);
}
END_TEST

/* ---- registration ------------------------------------------------------- */

#ifndef NDEBUG
/* Debug builds poison a socket at close: a second close or a later call
 * fails with EBADF and says so on stderr (a debugging aid, not a
 * contract; release builds free the object, and this case is not built). */
START_TEST(debug_use_after_close)
{
    usock_t *c, *s;
    char buf[8], msg[512] = "";
    FILE *err = tmpfile();
    int saved = dup(2);

    ck_assert_ptr_nonnull(err);
    pair(&c, &s);
    ck_assert_ok(usock_close(c));
    dup2(fileno(err), 2);
    ck_assert_errno(usock_close(c), EBADF);
    ck_assert_errno(usock_recv(c, buf, sizeof buf), EBADF);
    ck_assert_errno(usock_send(c, "x", 1), EBADF);
    ck_assert_errno(usock_readline(c, buf, sizeof buf), EBADF);
    ck_assert_errno(usock_settimeout(c, 1.0), EBADF);
    ck_assert_errno(usock_fileno(c), EBADF);
    ck_assert_errno(usock_shutdown(c, SHUT_RDWR), EBADF);
    ck_assert_errno_null(usock_accept(c, NULL), EBADF);
    ck_assert_errno_null(usock_makefile(c, "rb"), EBADF);
    dup2(saved, 2);
    rewind(err);
    size_t n = fread(msg, 1, sizeof msg - 1, err);
    msg[n] = '\0';
    ck_assert_msg(strstr(msg, "used after usock_close") != NULL,
                  "stderr: \"%s\"", msg);
    fclose(err);
    usock_close(s);
}
END_TEST
#endif

static void add_tests(TCase *tc)
{
#ifndef NDEBUG
    tcase_add_test(tc, debug_use_after_close);
#endif
    tcase_add_test(tc, read_exact);
    tcase_add_test(tc, read_timeout_keeps_bytes);
    tcase_add_test(tc, read_eagain_keeps_bytes);
    tcase_add_test(tc, read_deadline_keeps_bytes);
    tcase_add_test(tc, read_cancel_keeps_bytes);
    tcase_add_test(tc, read_error_keeps_bytes);
    tcase_add_test(tc, readline_lines);
    tcase_add_test(tc, readline_n_zero);
    tcase_add_test(tc, readline_n_two);
    tcase_add_test(tc, readline_long_line_pieces);
    tcase_add_test(tc, readline_lengths_at_limit);
    tcase_add_test(tc, readline_split_sends);
    tcase_add_test(tc, readline_crlf_split);
    tcase_add_test(tc, readline_nul_bytes);
    tcase_add_test(tc, readline_eof_tail);
    tcase_add_test(tc, readline_timeout_keeps_bytes);
    tcase_add_test(tc, readline_cancel_keeps_bytes);
    tcase_add_test(tc, mix_recv_readline);
    tcase_add_test(tc, buffered_bytes_need_no_wait);
    tcase_add_test(tc, readline_no_newline_megabyte);
}

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");

    add_reactor_tcases(s, "stream", add_tests, 30);
    return s;
}

int main(void)
{
    return test_main(stream_suite());
}
