/*
 * libFuzzer harness (RELIABILITY.md S02, S03, S01): the socket's read
 * buffer under random chunking.  A socketpair: the harness writes chunks
 * into one end and runs usock_recv, usock_read and usock_readline,
 * interleaved, on the other (a usocket socket with timeout 0, so nothing
 * waits), checking every result against a model, the byte queue of what
 * was written and not yet read.  Each input byte pair is one step: the
 * op (low 2 bits of the first byte) and a size.  The written bytes come
 * from the input too, so lines and NULs appear where it puts them.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define BOUND 65536        /* the read buffer's bound (stream.c RB_MAX) */
#define QMAX (1u << 20)

static unsigned char queue[QMAX]; /* the model */
static size_t qhead, qlen;
static char out[3 * BOUND];

static void check(int ok)
{
    if (!ok) {
        abort();
    }
}

/* The reader returned k bytes in out: they are the model's next k. */
static void consumed(size_t k)
{
    check(k <= qlen && memcmp(out, queue + qhead, k) == 0);
    qhead += k;
    qlen -= k;
    if (qlen == 0) {
        qhead = 0;
    }
}

static size_t model_line(size_t max)
{
    const unsigned char *nl = memchr(queue + qhead, '\n',
                                     qlen < max ? qlen : max);
    return nl ? (size_t)(nl - (queue + qhead)) + 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    size_t pos = 0;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sv) != 0) {
        return 0;
    }
    usock_t *s = usock__wrap(sv[0], AF_UNIX, SOCK_STREAM, 0);
    if (s == NULL) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    usock_settimeout(s, 0);
    qhead = qlen = 0;
    while (pos + 2 <= size) {
        int op = data[pos] & 3;
        /* Sizes up to 16 KiB; now and then (op byte 0xfc..0xff) up to
         * 3 x the bound, to cross it. */
        size_t n = ((size_t)(data[pos] >> 2) << 8 | data[pos + 1]) % 16385;
        if ((data[pos] & 0xfc) == 0xfc) {
            n = (n * 13) % sizeof out;
        }
        pos += 2;
        ssize_t r;
        switch (op) {
        case 0: { /* write n bytes taken from the input (cycled) */
            size_t k = n;
            if (qhead + qlen + k > QMAX) {
                k = QMAX - qhead - qlen;
            }
            for (size_t i = 0; i < k;) { /* the input, cycled */
                size_t from = (pos + i) % size, m = size - from;
                m = m < k - i ? m : k - i;
                memcpy(out + i, data + from, m);
                i += m;
            }
            r = write(sv[1], out, k);
            if (r > 0) {
                memcpy(queue + qhead + qlen, out, (size_t)r);
                qlen += (size_t)r;
            }
            break;
        }
        case 1: /* recv: 1..n bytes of the model, EAGAIN when empty */
            r = usock_recv(s, out, n);
            if (n == 0) {
                check(r == 0);
            } else if (qlen == 0) {
                check(r == -1 && errno == EAGAIN);
            } else {
                check(r >= 1 && (size_t)r <= n);
                consumed((size_t)r);
            }
            break;
        case 2: /* read: all n, or EAGAIN keeping them (a short count
                   when more than the bound was taken) */
            r = usock_read(s, out, n);
            if (qlen >= n) {
                check(r == (ssize_t)n);
                consumed(n);
            } else if (r == -1) {
                check(errno == EAGAIN);
            } else {
                check(errno == EAGAIN && (size_t)r > BOUND - 0 &&
                      (size_t)r < n);
                consumed((size_t)r);
            }
            break;
        case 3: { /* readline into n + 1 bytes */
            size_t cap = n + 1, max = n < BOUND ? n : BOUND;
            r = usock_readline(s, out, cap);
            if (cap < 2) { /* no room for a byte and the NUL */
                check(r == -1 && errno == EINVAL);
                break;
            }
            size_t line = model_line(max);
            if (line) {
                check(r == (ssize_t)line && out[line] == '\0');
                consumed(line);
            } else if (qlen >= max) {
                check(r == (ssize_t)max);
                consumed(max);
            } else {
                check(r == -1 && errno == EAGAIN);
            }
            break;
        }
        }
    }
    /* End of stream: the rest comes out, then 0. */
    close(sv[1]);
    for (;;) {
        ssize_t r = usock_readline(s, out, sizeof out);
        if (r == 0) {
            break;
        }
        check(r > 0);
        consumed((size_t)r);
    }
    check(qlen == 0);
    usock_close(s);
    return 0;
}
