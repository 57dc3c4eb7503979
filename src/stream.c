/*
 * Stream reads over the socket's own buffer: read (no short reads) and
 * readline.  "Nothing is lost": a read that fails returns what it had
 * already taken to the front of the buffer, for the next call.
 *
 *   rb.buf: [ consumed | off ... off+len: bytes not yet returned | free ]
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Read-ahead of readline, per system call. */
#define RB_CHUNK 16384
/* The most one socket's own buffer holds (RELIABILITY.md S01, S04): a
 * readline returns a line longer than this in pieces of this size, and a
 * read that fails after taking more returns what it took (a short count,
 * errno set) instead of keeping it. */
#define RB_MAX 65536

size_t usock__rb_take(struct usock *s, void *buf, size_t n)
{
    struct usock__rbuf *rb = &s->rb;
    size_t k = n < rb->len ? n : rb->len;

    if (k == 0) {
        return 0;
    }
    memcpy(buf, rb->buf + rb->off, k);
    rb->off += k;
    rb->len -= k;
    if (rb->len == 0) {
        rb->off = 0;
    }
    return k;
}

/* Tests: non-zero makes every allocation of a read buffer fail (ENOMEM). */
USOCK__HIDDEN int usock__rb_nomem;

/* See internal.h. */
int usock__rb_reserve(struct usock__rbuf *rb, size_t want)
{
    if (rb->off + rb->len + want <= rb->cap) {
        return 0;
    }
    if (rb->off && rb->len + want <= rb->cap) {
        memmove(rb->buf, rb->buf + rb->off, rb->len);
        rb->off = 0;
        return 0;
    }
    size_t cap = rb->cap ? rb->cap : RB_CHUNK;
    while (cap < rb->len + want) {
        cap *= 2;
    }
    char *b = usock__rb_nomem ? NULL : usock__malloc(cap);
    if (!b) {
        return usock__fail(ENOMEM);
    }
    if (rb->len) {
        memcpy(b, rb->buf + rb->off, rb->len);
    }
    free(rb->buf);
    rb->buf = b;
    rb->cap = cap;
    rb->off = 0;
    return 0;
}

int usock__unread(struct usock *s, const void *buf, size_t n)
{
    struct usock__rbuf *rb = &s->rb;

    if (n == 0) {
        return 0;
    }
    if (rb->off < n) {
        if (usock__rb_reserve(rb, n) < 0) {
            return -1;
        }
        memmove(rb->buf + n, rb->buf + rb->off, rb->len);
        rb->off = n;
    }
    rb->off -= n;
    rb->len += n;
    memcpy(rb->buf + rb->off, buf, n);
    return 0;
}

int usock__rb_adopt(struct usock *s, char *buf, size_t cap, size_t off,
                    size_t n)
{
    struct usock__rbuf *rb = &s->rb;

    if (off + n + rb->len > cap) {
        if (n + rb->len > cap) {
            return usock__fail(ENOMEM);
        }
        memmove(buf, buf + off, n);
        off = 0;
    }
    if (rb->len) {
        memcpy(buf + off + n, rb->buf + rb->off, rb->len);
    }
    free(rb->buf);
    rb->buf = buf;
    rb->cap = cap;
    rb->off = off;
    rb->len += n;
    return 0;
}

/* Receive at most `max` more bytes into the buffer.  The count (0 at end of
 * stream), or -1 with errno. */
static ssize_t rb_fill(struct usock *s, size_t max, int64_t *dl)
{
    struct usock__rbuf *rb = &s->rb;

    if (usock__rb_reserve(rb, max) < 0) {
        return -1;
    }
    ssize_t r = usock__recv(s, rb->buf + rb->off + rb->len, max, NULL, dl);
    if (r > 0) {
        rb->len += (size_t)r;
    }
    return r;
}

/* A read failed after taking `got` bytes into buf: give them back, unless
 * the socket itself is gone (EBADF: closed while we waited). */
static ssize_t read_failed(struct usock *s, const void *buf, size_t got)
{
    int e = errno;
    if (e != EBADF && s->rb.len + got > RB_MAX) {
        errno = e;
        return (ssize_t)got; /* too much to keep: the caller has it */
    }
    if (e != EBADF && usock__unread(s, buf, got) < 0) {
        return -1; /* ENOMEM: the bytes could not be kept */
    }
    errno = e;
    return -1;
}

ssize_t usock_read(usock_t *s, void *buf, size_t n)
{
    int64_t dl = USOCK__DL_UNSET;
    size_t got;

    if (usock__check_io(s, buf, n) < 0) {
        return -1;
    }
    if (n && usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    got = usock__rb_take(s, buf, n);
    while (got < n) {
        ssize_t r = usock__recv(s, (char *)buf + got, n - got, NULL, &dl);
        if (r < 0) {
            return read_failed(s, buf, got);
        }
        if (r == 0) {
            break; /* end of stream: a short read */
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Length of the line at the front of the buffer, searching from `from`
 * and at most `max` bytes; 0 while no '\n' is found within max. */
static size_t line_len(const struct usock__rbuf *rb, size_t from, size_t max)
{
    size_t lim = rb->len < max ? rb->len : max;

    if (lim <= from) {
        return 0;
    }
    const char *p = memchr(rb->buf + rb->off + from, '\n',
                           lim - from);
    return p ? (size_t)(p - (rb->buf + rb->off)) + 1 : 0;
}

ssize_t usock_readline(usock_t *s, char *buf, size_t n)
{
    int64_t dl = USOCK__DL_UNSET;
    size_t max, k, scanned = 0;


    if (usock__check_io(s, buf, n) < 0) {
        return -1;
    }
    if (n < 2) {
        return usock__fail(EINVAL); /* n 1 would hold no byte of the line */
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    max = n - 1 < RB_MAX ? n - 1 : RB_MAX;
    while ((k = line_len(&s->rb, scanned, max)) == 0 && s->rb.len < max) {
        scanned = s->rb.len;
        size_t room = RB_MAX - s->rb.len;
        ssize_t r = rb_fill(s, room < RB_CHUNK ? room : RB_CHUNK, &dl);
        if (r < 0) {
            return -1; /* what was read stays buffered */
        }
        if (r == 0) {
            break; /* end of stream: the tail, then 0 */
        }
    }
    if (k == 0) {
        k = s->rb.len < max ? s->rb.len : max;
    }
    usock__rb_take(s, buf, k);
    buf[k] = '\0';
    return (ssize_t)k;
}
