/*
 * Data transfer: send, sendall, write, recv, sendto, recvfrom.  Each is the
 * one loop of STYLE rule 7: try the system call; EINTR retries; EAGAIN waits
 * on the reactor (the call's deadline computed once, at the first wait).
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/un.h>

#include "internal.h"

/* EPIPE on a stream socket that never connected is ENOTCONN (B09). */
static ssize_t send_failed(const struct usock *s)
{
    if (errno == EPIPE && s->type == SOCK_STREAM && !s->tried) {
        errno = ENOTCONN;
    }
    return -1;
}

/* One send(2) after waiting for room, to `to` when not NULL. */
static ssize_t send_one(struct usock *s, const void *buf, size_t n,
                        const usock_addr_t *to, int64_t *dl)
{
    const struct sockaddr *sa = to ? &to->u.sa : NULL;
    socklen_t len = to ? to->len : 0;

    if (unlikely(s->tls != NULL)) {
        return usock__tls_send(s, buf, n, dl);
    }
    for (;;) {
        ssize_t r = sendto(s->fd, buf, n, MSG_NOSIGNAL, sa, len);
        if (r >= 0) {
            return r;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return send_failed(s);
        }
        if (usock__wait(s, USOCK__OUT, dl) < 0) {
            return -1;
        }
    }
}

ssize_t usock_send(usock_t *s, const void *buf, size_t n)
{
    int64_t dl = USOCK__DL_UNSET;

    if (usock__check_io(s, buf, n) < 0) {
        return -1;
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    return send_one(s, buf, n, NULL, &dl);
}

ssize_t usock_sendto(usock_t *s, const void *buf, size_t n,
                     const usock_addr_t *to)
{
    int64_t dl = USOCK__DL_UNSET;

    if (usock__check_io(s, buf, n) < 0 || !to || to->len == 0 ||
        to->len > sizeof(to->u)) {
        return usock__fail(EINVAL);
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    return send_one(s, buf, n, to, &dl);
}

ssize_t usock_write(usock_t *s, const void *buf, size_t n)
{
    int64_t dl = USOCK__DL_UNSET;
    size_t done = 0;

    if (usock__check_io(s, buf, n) < 0) {
        return -1;
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    while (done < n) {
        ssize_t r = send_one(s, (const char *)buf + done, n - done, NULL, &dl);
        if (r < 0) {
            /* Report what went out; errno says why it stopped. */
            return done ? (ssize_t)done : -1;
        }
        done += (size_t)r;
    }
    return (ssize_t)done;
}

int usock_sendall(usock_t *s, const void *buf, size_t n)
{
    ssize_t r = usock_write(s, buf, n);
    return (r >= 0 && (size_t)r == n) ? 0 : -1;
}

/* Reads in a row that find data without waiting, after which the reader
 * gives the thread's other tasks, its timers and its reactor a turn
 * (libuv reads at most 32 datagrams per readiness): a peer that sends
 * faster than we read must not starve the thread (RELIABILITY.md L05,
 * L06). */
#define RECV_BURST 32

/* That turn: a timer-only wait due at once, holding s's read slot so that
 * a close or a cancel still reaches us; it ends at the hub's next pass.
 * Not for a non-blocking socket, nor on a thread with no other task.  0,
 * or -1 with errno (ECANCELED, EBADF). */
static int recv_turn(struct usock *s, int64_t *dl)
{
    const struct usock_hub *h = usock__tls_hub;

    s->burst = 0;
    if (s->timeout == 0 || !h || !h->has_reactor) {
        return 0;
    }
    /* A deadline that passed meanwhile still gets its one try. */
    if (usock__backoff(s, USOCK__IN, dl, usock__clock_ns()) < 0 &&
        errno != ETIMEDOUT) {
        return -1;
    }
    return 0;
}

ssize_t usock__recv(struct usock *s, void *buf, size_t n, usock_addr_t *from,
                    int64_t *dl)
{
    int waited = 0;

    if (unlikely(s->tls != NULL)) {
        if (from && usock_getpeername(s, from) < 0) {
            memset(from, 0, sizeof(*from));
        }
        return usock__tls_recv(s, buf, n, dl);
    }
    /* The last read emptied the kernel's queue (as after every reply of a
     * request/response protocol): wait for data first rather than pay for
     * a recv(2) that fails with EAGAIN.  A deadline already passed still
     * gets one try, so a call that need not wait still succeeds. */
    if (s->drained && s->timeout != 0) {
        s->drained = 0;
        waited = 1;
        if (usock__wait(s, USOCK__IN, dl) < 0 && errno != ETIMEDOUT) {
            return -1;
        }
    }
    if (waited) {
        s->burst = 0;
    } else if (unlikely(++s->burst >= RECV_BURST) && recv_turn(s, dl) < 0) {
        return -1;
    }
    for (;;) {
        ssize_t r;
        if (from) {
            memset(from, 0, sizeof(*from));
            from->len = sizeof(from->u);
            r = recvfrom(s->fd, buf, n, 0, &from->u.sa, &from->len);
        } else {
            r = recv(s->fd, buf, n, 0);
        }
        if (r >= 0) {
            if (from && s->family == AF_UNIX &&
                from->len < offsetof(struct sockaddr_un, sun_path)) {
                /* An unbound sender has no address at all (len 0): give it
                 * the unnamed AF_UNIX one, as getsockname and accept do. */
                from->u.sa.sa_family = AF_UNIX;
                from->len = offsetof(struct sockaddr_un, sun_path);
            }
            /* A short stream read emptied the queue; a datagram that had
             * to be waited for says the queue is usually empty. */
            s->drained = s->type == SOCK_STREAM ? r > 0 && (size_t)r < n
                                                : waited;
            return r;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return -1;
        }
        waited = 1;
        s->burst = 0;
        if (usock__wait(s, USOCK__IN, dl) < 0) {
            return -1;
        }
    }
}

ssize_t usock_recv(usock_t *s, void *buf, size_t n)
{
    int64_t dl = USOCK__DL_UNSET;

    if (usock__check_io(s, buf, n) < 0) {
        return -1;
    }
    if (n == 0) {
        return 0;
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    if (s->rb.len) {
        return (ssize_t)usock__rb_take(s, buf, n);
    }
    return usock__recv(s, buf, n, NULL, &dl);
}

ssize_t usock_recvfrom(usock_t *s, void *buf, size_t n, usock_addr_t *from)
{
    int64_t dl = USOCK__DL_UNSET;
    usock_addr_t dummy;

    if (usock__check_io(s, buf, n) < 0) {
        return -1;
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    if (s->rb.len && s->type == SOCK_STREAM) {
        if (from && usock_getpeername(s, from) < 0) {
            memset(from, 0, sizeof(*from));
        }
        return (ssize_t)usock__rb_take(s, buf, n);
    }
    return usock__recv(s, buf, n, from ? from : &dummy, &dl);
}
