/*
 * Socket objects: creation, wrapping, close, fileno, shutdown.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static atomic_uint next_gen = 1; /* usock__io.gen: one per socket */
static atomic_long live; /* socket objects alive (usock__live_sockets) */

long usock__live_sockets(void)
{
    return atomic_load(&live);
}

int usock__check_io(const struct usock *s, const void *buf, size_t n)
{
    if (!s || (!buf && n) || n > SSIZE_MAX) {
        return usock__fail(EINVAL);
    }
    return usock__closed(s) ? -1 : 0;
}

#ifndef NDEBUG
int usock__closed(const struct usock *s)
{
    if (s && s->type == USOCK__CLOSED) {
        fprintf(stderr, "usocket: socket %p used after usock_close "
                        "(debug build)\n", (const void *)s);
        errno = EBADF;
        return 1;
    }
    return 0;
}
#endif

/* Release s at close: free it, or poison it in debug builds. */
static void release(struct usock *s)
{
    free(s->rb.buf);
#ifdef NDEBUG
    free(s);
#else
    *s = (struct usock){0};
    s->fd = -1;
    s->io.fd = -1;
    s->type = USOCK__CLOSED;
#endif
}

struct usock *usock__wrap(int fd, int family, int type, int proto)
{
    struct usock *s;

    if (usock__memalign((void **)&s, 64, sizeof(*s)) != 0) {
        errno = ENOMEM;
        return NULL;
    }
    *s = (struct usock){0};
    s->fd = fd;
    s->family = family;
    s->type = type;
    s->proto = proto;
    s->timeout = usock__default_timeout();
    s->io.fd = fd;
    s->io.gen = atomic_fetch_add_explicit(&next_gen, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return s;
}

/* Make fd non-blocking and close-on-exec where the kernel could not do it
 * atomically. */
static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return -1;
    }
    return 0;
}

usock_t *usock_socket(int family, int type, int proto)
{
    int fd;
    struct usock *s;

    if (family != AF_INET && family != AF_INET6 && family != AF_UNIX) {
        errno = EAFNOSUPPORT;
        return NULL;
    }
    if (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_RAW) {
        errno = EINVAL;
        return NULL;
    }
    fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
    if (fd < 0 && errno == EINVAL) {
        fd = socket(family, type, proto);
        if (fd >= 0 && set_flags(fd) < 0) {
            close(fd);
            return NULL;
        }
    }
    if (fd < 0) {
        return NULL;
    }
    /* TCP_NODELAY from creation (DESIGN.md "TCP defaults"): a listener's
     * accepted sockets inherit it on Linux, so accept makes no call for
     * it, and the library never sets it again once the user clears it. */
    if (family != AF_UNIX && type == SOCK_STREAM &&
        (proto == 0 || proto == IPPROTO_TCP)) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    s = usock__wrap(fd, family, type, proto);
    if (!s) {
        close(fd);
    }
    return s;
}

/*
 * Close order (STYLE rule 13): wake the waiters with EBADF, make the reactor
 * forget the fd, then close(2) — ignoring EINTR, after which the fd is gone
 * on Linux anyway.
 */
/* Wake s's waiters, make its hub's reactor forget the fd, close it. */
static int close_here(struct usock *s)
{
    struct usock_hub *h = s->hub;

    if (h && h == usock__tls_hub && h->has_reactor) {
        if (s->rwait) {
            usock__wake(s->rwait, EBADF);
        }
        if (s->wwait) {
            usock__wake(s->wwait, EBADF);
        }
        h->reactor.ops->io_forget(&h->reactor, s->fd);
    }
    if (unlikely(s->tls != NULL)) {
        usock__tls_close(s); /* close_notify if it needs no wait */
    }
    int r = close(s->fd);
    int e = errno;
    release(s);
    atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
    if (h) {
        usock__hub_release(h);
    }
    if (r < 0 && e != EINTR) {
        return usock__fail(e);
    }
    return 0;
}

/* On the thread of the hub s was last used on (or as that hub is being
 * freed, when its reactor is gone already). */
static void close_remote(void *arg)
{
    close_here(arg);
}

int usock_close(usock_t *s)
{
    if (!s) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    struct usock_hub *o = __atomic_load_n(&s->hub, __ATOMIC_ACQUIRE);
    if (o && o != usock__tls_hub) {
        /* Last used on another thread's hub (DESIGN "Lifetimes across
         * threads"): that hub retires the watcher and wakes a waiter
         * there, then closes the fd, so the fd number cannot be reused
         * before.  A hub whose thread has exited has no reactor left. */
        if (usock__hub_send(o, close_remote, s) == 0) {
            return 0;
        }
        if (errno != ESHUTDOWN) {
            return -1; /* ENOMEM: s is untouched */
        }
    }
    return close_here(s);
}

int usock_fileno(const usock_t *s)
{
    if (!s) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    return s->fd;
}

int usock_shutdown(usock_t *s, int how)
{
    if (!s || (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)) {
        return usock__fail(EINVAL);
    }
    if (usock__closed(s)) {
        return -1;
    }
    if (s->tls && how != SHUT_RD && usock__tls_shutdown(s) < 0) {
        return -1;
    }
    return shutdown(s->fd, how);
}
