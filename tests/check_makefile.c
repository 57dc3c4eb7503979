/*
 * Suite "makefile": stdio over a socket with usock_makefile — "rb" lines and
 * exact sizes, "wb" with fflush, fclose leaving the socket open, "r+b"
 * switching from reading to writing without a seek, read-ahead given back
 * to the socket, timeouts, bad modes.
 */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <usocket.h>

#include "helpers.h"

#define BIG 100000

static unsigned char big_out[BIG], big_in[BIG];

/* Wait (bounded) until the kernel holds `want` bytes for s, so one read(2)
 * of stdio takes them all. */
static void wait_kernel_bytes(usock_t *s, size_t want)
{
    char tmp[256];
    double end = usock_now() + 5.0;
    ssize_t r = -1;

    ck_assert_uint_le(want, sizeof tmp);
    while (usock_now() < end) {
        r = recv(usock_fileno(s), tmp, sizeof tmp, MSG_PEEK | MSG_DONTWAIT);
        if (r >= (ssize_t)want) {
            return;
        }
        usock_sleep(0.001);
    }
    ck_abort_msg("only %zd of %zu bytes arrived", r, want);
}

/* Send str from s and wait until it is all queued at c. */
static void send_wait(usock_t *s, usock_t *c, const char *str)
{
    ck_assert_ok(usock_sendall(s, str, strlen(str)));
    wait_kernel_bytes(c, strlen(str));
}

/* Read one line from s, bounded, and compare it. */
static void expect_line(usock_t *s, const char *want)
{
    char line[256];

    ck_assert_ok(usock_settimeout(s, 5.0));
    errno = 0;
    ssize_t n = usock_readline(s, line, sizeof line);
    ck_assert_msg(n == (ssize_t)strlen(want) && strcmp(line, want) == 0,
                  "expected line \"%s\", got %zd \"%s\" (%s)", want, n,
                  n > 0 ? line : "", test_errname(n < 0 ? errno : 0));
}

static void assert_open(usock_t *s, int fd)
{
    ck_assert_int_eq(usock_fileno(s), fd);
    ck_assert_int_ge(fcntl(fd, F_GETFD), 0);
}

/* ---- "rb" --------------------------------------------------------------- */

START_TEST(rb_lines_and_sizes)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    ck_assert_ok(usock_sendall(s, "line one\nline two\n0123456789", 28));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "line one\n");
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "line two\n");
    ck_assert_uint_eq(fread(buf, 1, 4, f), 4);
    ck_assert_mem_eq(buf, "0123", 4);
    /* fread blocks (letting the sender task run) until all 10 are in. */
    test_send_after(s, 0.05, "ABCD", 4);
    double t0 = usock_now();
    ck_assert_uint_eq(fread(buf, 1, 10, f), 10);
    ck_assert_duration(t0, 0.05, 1.0);
    ck_assert_mem_eq(buf, "456789ABCD", 10);
    ck_assert_ok(usock_shutdown(s, SHUT_WR));
    ck_assert_int_eq(fgetc(f), EOF);
    ck_assert(feof(f));
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

static void big_sender(void *arg)
{
    usock_write(arg, big_out, BIG);
}

START_TEST(rb_fread_exact_large)
{
    usock_t *c, *s;
    FILE *f;

    test_pair(&c, &s);
    for (size_t i = 0; i < BIG; i++) {
        big_out[i] = (unsigned char)(i * 7 + i / 251);
    }
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    ck_assert_int_gt(usock_spawn(big_sender, s), 0);
    ck_assert_uint_eq(fread(big_in, 1, BIG, f), BIG);
    ck_assert_int_eq(memcmp(big_in, big_out, BIG), 0);
    /* End of stream after the peer shuts down. */
    ck_assert_ok(usock_shutdown(s, SHUT_WR));
    ck_assert_int_eq(fgetc(f), EOF);
    ck_assert(feof(f));
    ck_assert(!ferror(f));
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* fclose of an "rb" FILE gives the read-ahead back to the socket. */
START_TEST(rb_fclose_keeps_read_ahead)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "one\ntwo\nthree\n");
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "one\n");
    ck_assert_ok(fclose(f));
    assert_open(c, usock_fileno(c));
    expect_line(c, "two\n");
    expect_line(c, "three\n");
    usock_close(c);
    usock_close(s);
}
END_TEST

/* The same through usock_recv: the bytes come back in order. */
START_TEST(rb_fclose_then_recv)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "head\ntail-bytes");
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "head\n");
    ck_assert_ok(fclose(f));
    ck_assert_ok(usock_settimeout(c, 1.0));
    ck_assert_count(usock_recv(c, buf, sizeof buf), 10);
    ck_assert_mem_eq(buf, "tail-bytes", 10);
    usock_close(c);
    usock_close(s);
}
END_TEST

/* fflush of an "rb" FILE gives its read-ahead back (through the seek
 * callback), so a program may then use the socket directly. */
START_TEST(rb_fflush_gives_back)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "one\ntwo\n");
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "one\n");
    ck_assert_ok(fflush(f));
    expect_line(c, "two\n");
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- "wb" --------------------------------------------------------------- */

START_TEST(wb_fprintf_fflush)
{
    usock_t *c, *s;
    char buf[16];
    FILE *f;

    test_pair(&c, &s);
    int fd = usock_fileno(c);
    f = ck_assert_nonnull(usock_makefile(c, "wb"));
    ck_assert_int_eq(fprintf(f, "hello %d\n", 42), 9);
    ck_assert_ok(fflush(f));
    expect_line(s, "hello 42\n");
    /* fclose flushes what is left, and leaves the socket open. */
    ck_assert_int_ge(fputs("bye\n", f), 0);
    ck_assert_ok(fclose(f));
    expect_line(s, "bye\n");
    assert_open(c, fd);
    ck_assert_count(usock_send(c, "after", 5), 5);
    ck_assert_ok(usock_settimeout(s, 5.0));
    ck_assert_count(usock_read(s, buf, 5), 5);
    ck_assert_mem_eq(buf, "after", 5);
    usock_close(c);
    usock_close(s);
}
END_TEST

struct reader {
    usock_t *s;
    ssize_t rc;
    int done;
};

static void big_reader(void *arg)
{
    struct reader *r = arg;

    r->rc = usock_read(r->s, big_in, BIG);
    r->done = 1;
}

START_TEST(wb_large_fwrite)
{
    usock_t *c, *s;
    struct reader r = {0};
    FILE *f;

    test_pair(&c, &s);
    for (size_t i = 0; i < BIG; i++) {
        big_out[i] = (unsigned char)(i * 13 + 5);
    }
    f = ck_assert_nonnull(usock_makefile(c, "wb"));
    /* The peer reads in a task while fwrite waits for room. */
    r.s = s;
    ck_assert_ok(usock_settimeout(s, 5.0));
    ck_assert_int_gt(usock_spawn(big_reader, &r), 0);
    ck_assert_uint_eq(fwrite(big_out, 1, BIG, f), BIG);
    ck_assert_ok(fclose(f));
    double end = usock_now() + 5.0;
    while (!r.done && usock_now() < end) {
        usock_sleep(0.001);
    }
    ck_assert(r.done);
    ck_assert_count(r.rc, BIG);
    ck_assert_int_eq(memcmp(big_in, big_out, BIG), 0);
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- "r+b" -------------------------------------------------------------- */

/* Read a line, then write without fseek/fflush in between: the reply goes
 * out and the read-ahead is not lost. */
START_TEST(rpb_switch_without_seek)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "first\nsecond\n");
    f = ck_assert_nonnull(usock_makefile(c, "r+b"));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "first\n");
    ck_assert_int_ge(fputs("reply\n", f), 0);
    ck_assert_ok(fflush(f));
    expect_line(s, "reply\n");
    /* The bytes stdio had read ahead come back. */
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "second\n");
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* The same, with the rest read from the socket after fclose. */
START_TEST(rpb_rest_after_fclose)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "GET /\nHost: x\nrest");
    f = ck_assert_nonnull(usock_makefile(c, "r+b"));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "GET /\n");
    ck_assert_int_eq(fprintf(f, "200 OK\n"), 7);
    ck_assert_ok(fclose(f));
    expect_line(s, "200 OK\n");
    expect_line(c, "Host: x\n");
    ck_assert_count(usock_recv(c, buf, sizeof buf), 4);
    ck_assert_mem_eq(buf, "rest", 4);
    usock_close(c);
    usock_close(s);
}
END_TEST

/* A request/response loop over one "r+b" FILE, lines sent in one burst. */
START_TEST(rpb_dialogue)
{
    usock_t *c, *s;
    char buf[64], want[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "q1\nq2\nq3\n");
    f = ck_assert_nonnull(usock_makefile(c, "r+b"));
    for (int i = 1; i <= 3; i++) {
        ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
        snprintf(want, sizeof want, "q%d\n", i);
        ck_assert_str_eq(buf, want);
        ck_assert_int_gt(fprintf(f, "a%d\n", i), 0);
        ck_assert_ok(fflush(f));
        snprintf(want, sizeof want, "a%d\n", i);
        expect_line(s, want);
    }
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- timeouts and bad arguments ----------------------------------------- */

START_TEST(timeout_sets_ferror)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    ck_assert_ok(usock_settimeout(c, 0.1));
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    double t0 = usock_now();
    errno = 0;
    ck_assert_ptr_null(fgets(buf, sizeof buf, f));
    ck_assert_str_eq(test_errname(errno), "ETIMEDOUT");
    ck_assert_duration(t0, 0.1, 0.5);
    ck_assert(ferror(f));
    ck_assert(!feof(f));
    /* The data that comes later is still read. */
    clearerr(f);
    test_send_after(s, 0.05, "late\n", 5);
    ck_assert_ok(usock_settimeout(c, 5.0));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "late\n");
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- a trickling peer: what a timeout bounds ---------------------------- */

struct trickle {
    usock_t *s;
    int n;          /* bytes to send, one every 300 ms */
};

static void trickle_task(void *arg)
{
    struct trickle *t = arg;

    for (int i = 0; i < t->n; i++) {
        if (usock_sleep(0.3) < 0 || usock_sendall(t->s, "x", 1) < 0) {
            return;
        }
    }
}

/* A deadline set around fread bounds the whole call, however the bytes
 * trickle in: it returns what came, with ferror and ETIMEDOUT. */
START_TEST(trickle_fread_deadline)
{
    usock_t *c, *s;
    struct trickle t = {0, 20};
    char buf[4096];
    FILE *f;

    test_pair(&c, &s);
    t.s = s;
    ck_assert_ok(usock_settimeout(c, 1.0));
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    int tid = usock_spawn(trickle_task, &t);
    double t0 = usock_now();
    double old = usock_setdeadline(t0 + 1.0);
    errno = 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    int e = errno;
    usock_setdeadline(old);
    ck_assert_duration(t0, 1.0, 1.0);
    ck_assert_msg(n >= 2 && n <= 4, "fread returned %zu", n);
    ck_assert(ferror(f));
    ck_assert_str_eq(test_errname(e), "ETIMEDOUT");
    ck_assert_ok(fclose(f));
    /* The trickler still sleeps or sends: stop it before s goes. */
    ck_assert_ok(usock_cancel(tid));
    ck_assert_ok(usock_join(tid, 2.0));
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(trickle_fgets_deadline)
{
    usock_t *c, *s;
    struct trickle t = {0, 20};
    char buf[256];
    FILE *f;

    test_pair(&c, &s);
    t.s = s;
    ck_assert_ok(usock_settimeout(c, 1.0));
    f = ck_assert_nonnull(usock_makefile(c, "r+b"));
    int tid = usock_spawn(trickle_task, &t);
    double t0 = usock_now();
    double old = usock_setdeadline(t0 + 1.0);
    errno = 0;
    ck_assert_ptr_null(fgets(buf, sizeof buf, f));
    int e = errno;
    usock_setdeadline(old);
    ck_assert_duration(t0, 1.0, 1.0);
    ck_assert(ferror(f));
    ck_assert_str_eq(test_errname(e), "ETIMEDOUT");
    ck_assert_ok(fclose(f));
    /* The trickler still sleeps or sends: stop it before s goes. */
    ck_assert_ok(usock_cancel(tid));
    ck_assert_ok(usock_join(tid, 2.0));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* Without a deadline each read of the stream is bounded by the timeout: a
 * peer that trickles 4 bytes and falls silent ends the fread one timeout
 * after its last byte. */
START_TEST(trickle_then_silence)
{
    usock_t *c, *s;
    struct trickle t = {0, 4};
    char buf[4096];
    FILE *f;

    test_pair(&c, &s);
    t.s = s;
    ck_assert_ok(usock_settimeout(c, 0.5));
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    usock_spawn(trickle_task, &t);
    double t0 = usock_now();
    errno = 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    int e = errno;
    ck_assert_duration(t0, 4 * 0.3 + 0.5, 4 * 0.3 + 0.5);
    ck_assert_uint_eq(n, 4);
    ck_assert(ferror(f));
    ck_assert_str_eq(test_errname(e), "ETIMEDOUT");
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

/* fwrite of far more than the peer takes, under a deadline: ends by it
 * with a short count. */
START_TEST(fwrite_deadline)
{
    usock_t *c, *s;
    size_t n = 32u << 20;
    char *big = ck_assert_nonnull(calloc(1, n));
    FILE *f;

    test_pair(&c, &s);
    ck_assert_ok(usock_settimeout(c, 5.0));
    f = ck_assert_nonnull(usock_makefile(c, "wb"));
    double t0 = usock_now();
    double old = usock_setdeadline(t0 + 0.5);
    errno = 0;
    size_t w = fwrite(big, 1, n, f);
    int e = errno;
    usock_setdeadline(old);
    ck_assert_duration(t0, 0.5, 0.5);
    ck_assert_uint_lt(w, n);
    ck_assert(ferror(f));
    ck_assert_str_eq(test_errname(e), "ETIMEDOUT");
    fclose(f);
    free(big);
    usock_close(c);
    usock_close(s);
}
END_TEST

/* ---- out of memory ------------------------------------------------------ */

extern int usock__rb_nomem;

/* fclose out of memory keeps the read-ahead (the socket adopts the
 * stream's buffer). */
START_TEST(fclose_nomem_keeps_read_ahead)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "one\ntwo\nthree\n");
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "one\n");
    usock__rb_nomem = 1;
    ck_assert_ok(fclose(f));
    usock__rb_nomem = 0;
    expect_line(c, "two\n");
    expect_line(c, "three\n");
    usock_close(c);
    usock_close(s);
}
END_TEST

/* fflush of an "rb" stream out of memory fails with ENOMEM (not ESPIPE,
 * which stdio would swallow) and the bytes stay in the stream. */
START_TEST(fflush_nomem_is_enomem)
{
    usock_t *c, *s;
    char buf[64];
    FILE *f;

    test_pair(&c, &s);
    send_wait(s, c, "one\ntwo\n");
    f = ck_assert_nonnull(usock_makefile(c, "rb"));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    usock__rb_nomem = 1;
    errno = 0;
    ck_assert_int_eq(fflush(f), EOF);
    ck_assert_str_eq(test_errname(errno), "ENOMEM");
    usock__rb_nomem = 0;
    clearerr(f);
    ck_assert_ok(usock_settimeout(c, 1.0));
    ck_assert_ptr_eq(fgets(buf, sizeof buf, f), buf);
    ck_assert_str_eq(buf, "two\n");
    ck_assert_ok(fclose(f));
    usock_close(c);
    usock_close(s);
}
END_TEST

START_TEST(bad_modes)
{
    usock_t *c, *s;

    test_pair(&c, &s);
    ck_assert_errno_null(usock_makefile(c, "r"), EINVAL);
    ck_assert_errno_null(usock_makefile(c, "w"), EINVAL);
    ck_assert_errno_null(usock_makefile(c, "a"), EINVAL);
    ck_assert_errno_null(usock_makefile(c, "ab"), EINVAL);
    ck_assert_errno_null(usock_makefile(c, ""), EINVAL);
    ck_assert_errno_null(usock_makefile(c, NULL), EINVAL);
    ck_assert_errno_null(usock_makefile(NULL, "rb"), EINVAL);
    ck_assert_errno_null(usock_makefile(NULL, "wb"), EINVAL);
    /* The socket is untouched. */
    ck_assert_count(usock_send(c, "k", 1), 1);
    usock_close(c);
    usock_close(s);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, rb_lines_and_sizes);
    tcase_add_test(tc, rb_fread_exact_large);
    tcase_add_test(tc, rb_fclose_keeps_read_ahead);
    tcase_add_test(tc, rb_fclose_then_recv);
    tcase_add_test(tc, rb_fflush_gives_back);
    tcase_add_test(tc, wb_fprintf_fflush);
    tcase_add_test(tc, wb_large_fwrite);
    tcase_add_test(tc, rpb_switch_without_seek);
    tcase_add_test(tc, rpb_rest_after_fclose);
    tcase_add_test(tc, rpb_dialogue);
    tcase_add_test(tc, timeout_sets_ferror);
    tcase_add_test(tc, bad_modes);
    tcase_add_test(tc, trickle_fread_deadline);
    tcase_add_test(tc, trickle_fgets_deadline);
    tcase_add_test(tc, trickle_then_silence);
    tcase_add_test(tc, fwrite_deadline);
    tcase_add_test(tc, fclose_nomem_keeps_read_ahead);
    tcase_add_test(tc, fflush_nomem_is_enomem);
}

static Suite *makefile_suite(void)
{
    Suite *s = suite_create("makefile");

    add_reactor_tcases(s, "makefile", add_tests, 30);
    return s;
}

int main(void)
{
    return test_main(makefile_suite());
}
