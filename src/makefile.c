/*
 * usock_makefile: a stdio FILE over a socket (fopencookie).
 *
 * Reads and writes go through usock_recv/usock_write, so timeouts, deadlines
 * and cancellation hold; a failed call surfaces as a failed stdio call with
 * errno set.  stdio gives up its read-ahead by seeking back (fflush, or
 * switching an "r+b" stream from reading to writing): the seek callback
 * returns those bytes to the socket's own buffer from the last read, kept
 * in the FILE's buffer (ours, by setvbuf) or, for "r+b", whose writes may
 * already cover it, in a copy (the shadow).  fclose does not seek: the close
 * callback gives back the unread part of the FILE's buffer itself.
 *
 *   last: [ the last read, in buf or shadow: last_len bytes ]
 *           stdio returned these | read-ahead (k bytes)
 *   seek(-k, SEEK_CUR) -> usock__unread(last + last_len - k, k)
 *
 * fclose flushes and frees the FILE and the cookie, never the socket.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define FILE_BUF 8192

/* glibc's flag of a FILE whose buffer holds output (libio.h). */
#define FILE_PUTTING 0x800

struct cookie {
    struct usock *s;
    FILE *f;
    off64_t pos;        /* bytes read so far, minus bytes given back */
    const char *last;   /* the last read: in buf ("rb") or shadow ("r+b") */
    size_t last_len;
    int rw;             /* "r+b": keep the shadow */
    char *buf;          /* the FILE's buffer, FILE_BUF bytes (malloc'd on
                           its own, so fclose can hand it to the socket) */
    char shadow[];      /* FILE_BUF bytes when rw */
};

static ssize_t c_read(void *v, char *out, size_t n)
{
    struct cookie *c = v;
    ssize_t r = usock_recv(c->s, out, n);

    if (r < 0) {
        return -1;
    }
    /* Reads straight into a caller's memory leave no read-ahead. */
    int ours = out >= c->buf && out < c->buf + FILE_BUF;
    c->last = out;
    if (ours && c->rw) {
        memcpy(c->shadow, out, (size_t)r);
        c->last = c->shadow;
    }
    c->last_len = ours ? (size_t)r : 0;
    c->pos += r;
    return r;
}

static ssize_t c_write(void *v, const char *in, size_t n)
{
    struct cookie *c = v;
    ssize_t r = usock_write(c->s, in, n);

    /* A short count tells stdio the rest failed; errno says why. */
    c->last_len = 0;
    return r < 0 ? 0 : r;
}

static int c_seek(void *v, off64_t *off, int whence)
{
    struct cookie *c = v;
    off64_t back = whence == SEEK_CUR ? -*off : c->pos - *off;

    if ((whence != SEEK_CUR && whence != SEEK_SET) || back < 0) {
        errno = ESPIPE;
        return -1;
    }
    if (back > 0) {
        if ((size_t)back > c->last_len) {
            errno = ESPIPE;
            return -1;
        }
        /* Out of memory: ENOMEM (stdio then keeps the bytes and fails the
         * call; ESPIPE would make it drop the error). */
        if (usock__unread(c->s, c->last + c->last_len - back,
                          (size_t)back) < 0) {
            return -1;
        }
        c->last_len -= (size_t)back;
        c->pos -= back;
    }
    *off = c->pos;
    return 0;
}

/* Give the read-ahead p[0, n) (in c->buf) back to the socket.  Out of
 * memory, the socket takes c->buf itself as its read buffer. */
static int give_back(struct cookie *c, const char *p, size_t n)
{
    if (usock__unread(c->s, p, n) == 0) {
        return 0;
    }
    if ((const char *)p < c->buf || p + n > c->buf + FILE_BUF ||
        usock__rb_adopt(c->s, c->buf, FILE_BUF, (size_t)(p - c->buf),
                        n) < 0) {
        return -1; /* ENOMEM: lost */
    }
    c->buf = NULL;
    return 0;
}

static int c_close(void *v)
{
    struct cookie *c = v;
    int r = 0;
#ifdef __GLIBC__
    /* The FILE is intact until this returns: keep its read-ahead. */
    FILE *f = c->f;
    if (!(f->_flags & FILE_PUTTING) && f->_IO_read_ptr < f->_IO_read_end) {
        r = give_back(c, f->_IO_read_ptr,
                      (size_t)(f->_IO_read_end - f->_IO_read_ptr));
    }
#endif
    free(c->buf);
    free(c);
    return r;
}

FILE *usock_makefile(usock_t *s, const char *mode)
{
    cookie_io_functions_t io = {c_read, c_write, c_seek, c_close};
    struct cookie *c;
    FILE *f;

    if (s && usock__closed(s)) {
        return NULL;
    }
    if (!s || !mode ||
        (strcmp(mode, "rb") != 0 && strcmp(mode, "wb") != 0 &&
         strcmp(mode, "r+b") != 0 && strcmp(mode, "rb+") != 0)) {
        errno = EINVAL;
        return NULL;
    }
    int rw = strchr(mode, '+') != NULL;
    c = calloc(1, sizeof(*c) + (rw ? FILE_BUF : 0));
    if (c) {
        c->buf = malloc(FILE_BUF);
    }
    if (!c || !c->buf) {
        free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->s = s;
    c->rw = rw;
    f = fopencookie(c, mode, io);
    if (!f) {
        free(c->buf);
        free(c);
        return NULL;
    }
    c->f = f;
    if (setvbuf(f, c->buf, _IOFBF, FILE_BUF) != 0) {
        fclose(f);
        errno = ENOMEM;
        return NULL;
    }
    return f;
}
