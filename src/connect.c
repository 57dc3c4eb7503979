/*
 * Connection set-up: bind, listen, accept, connect.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* A usable address for s: non-NULL, a sane length, s's own family. */
static int check_addr(const struct usock *s, const usock_addr_t *a)
{
    if (!s || !a || a->len == 0 || a->len > sizeof(a->u)) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    if (a->u.sa.sa_family != s->family) {
        return usock__fail(EAFNOSUPPORT);
    }
    return 0;
}

int usock_bind(usock_t *s, const usock_addr_t *a)
{
    if (check_addr(s, a) < 0) {
        return -1;
    }
    return bind(s->fd, &a->u.sa, a->len);
}

int usock_listen(usock_t *s, int backlog)
{
    if (!s) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    if (s->type != SOCK_STREAM) {
        return usock__fail(EOPNOTSUPP);
    }
    if (listen(s->fd, backlog < 0 ? SOMAXCONN : backlog) < 0) {
        return -1;
    }
    s->listening = 1;
    return 0;
}

/* accept(2) failures that mean "out of fds or memory": back off, retry. */
static int out_of_resources(int e)
{
    return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

/* Wrap an accepted fd and report the peer. */
static usock_t *accepted(usock_t *s, int fd, const usock_addr_t *from,
                         usock_addr_t *peer)
{
    struct usock *c = usock__wrap(fd, s->family, s->type, s->proto);

    if (!c) {
        close(fd);
        return NULL;
    }
    c->connected = 1;
    c->tried = 1;
    if (peer) {
        *peer = *from;
    }
    return c;
}

usock_t *usock_accept(usock_t *s, usock_addr_t *peer)
{
    int64_t dl = USOCK__DL_UNSET;
    int64_t backoff = 1000000; /* 1 ms, doubling up to 100 ms */
    usock_addr_t from;

    if (!s || usock__closed(s)) {
        errno = s ? EBADF : EINVAL;
        return NULL;
    }
    if (s->type != SOCK_STREAM) {
        errno = EOPNOTSUPP;
        return NULL;
    }
    if (!s->listening || usock__cancelled()) {
        errno = s->listening ? ECANCELED : EINVAL;
        return NULL;
    }
    for (;;) {
        memset(&from, 0, sizeof(from));
        from.len = sizeof(from.u);
        int fd = accept4(s->fd, &from.u.sa, &from.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            return accepted(s, fd, &from, peer);
        }
        int e = errno;
        if (e == EINTR || e == ECONNABORTED) {
            continue;
        }
        if (out_of_resources(e)) {
            /* The listener stays readable: wait on the timer alone. */
            if (s->timeout == 0) {
                return NULL;
            }
            if (usock__backoff(s, USOCK__IN, &dl,
                               usock__clock_ns() + backoff) < 0) {
                return NULL;
            }
            backoff = backoff * 2 > 100000000 ? 100000000 : backoff * 2;
            continue;
        }
        if (e != EAGAIN && e != EWOULDBLOCK) {
            return NULL;
        }
        if (usock__wait(s, USOCK__IN, &dl) < 0) {
            return NULL;
        }
    }
}

/* After connect(2) said EINPROGRESS: wait for writability, read SO_ERROR. */
static int finish_connect(struct usock *s)
{
    int64_t dl = USOCK__DL_UNSET;
    int err = 0;
    socklen_t len = sizeof(err);

    if (s->timeout == 0) {
        return usock__fail(EINPROGRESS);
    }
    if (usock__wait(s, USOCK__OUT, &dl) < 0) {
        return -1;
    }
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        return -1;
    }
    if (err) {
        return usock__fail(err);
    }
    s->connected = 1;
    return 0;
}

int usock_connect(usock_t *s, const usock_addr_t *a)
{
    if (check_addr(s, a) < 0) {
        return -1;
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    if (s->connected && s->type == SOCK_STREAM) {
        /* Linux answers 0 once more after an asynchronous connect. */
        return usock__fail(EISCONN);
    }
    s->tried = 1;
    int64_t dl = USOCK__DL_UNSET;
    int64_t backoff = 1000000; /* 1 ms, doubling up to 100 ms */
    for (;;) {
        if (connect(s->fd, &a->u.sa, a->len) == 0) {
            s->connected = 1;
            return 0;
        }
        /* EINTR: the connection goes on in the background, as
         * EINPROGRESS. */
        if (errno == EINPROGRESS || errno == EINTR ||
            (errno == EAGAIN && s->family != AF_UNIX)) {
            return finish_connect(s);
        }
        if (errno != EAGAIN || s->timeout == 0) {
            return -1;
        }
        /* An AF_UNIX listener's backlog is full, and nothing says when it
         * has room: try again after a back-off, until the timeout. */
        if (usock__backoff(s, USOCK__OUT, &dl,
                           usock__clock_ns() + backoff) < 0) {
            return -1;
        }
        backoff = backoff * 2 > 100000000 ? 100000000 : backoff * 2;
    }
}

int usock_connect_ex(usock_t *s, const usock_addr_t *a)
{
    return usock_connect(s, a) == 0 ? 0 : errno;
}
