/*
 * usock_makefile: a stdio FILE over a socket (fopencookie).
 *
 * Reads and writes go through usock_recv/usock_write, so timeouts, deadlines
 * and cancellation hold; a failed call surfaces as a failed stdio call with
 * errno set.  The FILE has a buffer of ours, so when stdio gives up its
 * read-ahead (switching an "r+b" stream from reading to writing, or fclose)
 * it asks the seek callback to step back, and the bytes it had not returned
 * are still in that buffer: they go back to the socket's own buffer.
 *
 *   buf: [ ... bytes of the last read: last .. last+last_len ]
 *                               stdio returned these | read-ahead (k bytes)
 *   seek(-k, SEEK_CUR) → usock__unread(last + last_len - k, k)
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

struct cookie {
    struct usock *s;
    off64_t pos;        /* bytes read so far, minus bytes given back */
    const char *last;   /* the last read, when it went into buf */
    size_t last_len;
    char buf[FILE_BUF];
};

static ssize_t c_read(void *v, char *out, size_t n)
{
    struct cookie *c = v;
    ssize_t r = usock_recv(c->s, out, n);

    if (r < 0) {
        return -1;
    }
    int ours = out >= c->buf && out < c->buf + sizeof(c->buf);
    c->last = ours ? out : NULL;
    c->last_len = ours ? (size_t)r : 0;
    c->pos += r;
    return r;
}

static ssize_t c_write(void *v, const char *in, size_t n)
{
    struct cookie *c = v;
    ssize_t r = usock_write(c->s, in, n);

    /* A short count tells stdio the rest failed; errno says why. */
    c->last = NULL;
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
        if (!c->last || (size_t)back > c->last_len ||
            usock__unread(c->s, c->last + c->last_len - back,
                          (size_t)back) < 0) {
            errno = ESPIPE;
            return -1;
        }
        c->last_len -= (size_t)back;
        c->pos -= back;
    }
    *off = c->pos;
    return 0;
}

static int c_close(void *v)
{
    free(v);
    return 0;
}

FILE *usock_makefile(usock_t *s, const char *mode)
{
    cookie_io_functions_t io = {c_read, c_write, c_seek, c_close};
    struct cookie *c;
    FILE *f;

    if (!s || !mode || (strcmp(mode, "rb") && strcmp(mode, "wb") &&
                        strcmp(mode, "r+b") && strcmp(mode, "rb+"))) {
        errno = EINVAL;
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    c->s = s;
    f = fopencookie(c, mode, io);
    if (!f) {
        free(c);
        return NULL;
    }
    if (setvbuf(f, c->buf, _IOFBF, sizeof(c->buf)) != 0) {
        fclose(f);
        errno = ENOMEM;
        return NULL;
    }
    return f;
}
