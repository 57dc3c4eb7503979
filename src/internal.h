/*
 * The socket object and the helpers shared by the files of src/.
 *
 *   struct usock
 *   ┌──────────────────────────────┐
 *   │ fd, family, type, timeout    │
 *   │ io ──────────────────────────┼──▶ reactor of `hub` (one per fd)
 *   │ hub: where io is registered  │
 *   │ rwait, wwait ────────────────┼──▶ wait records on the waiters' stacks
 *   │ rb: bytes received, not yet  │     (one reader, one writer at most)
 *   │     returned (readline, and  │
 *   │     "nothing is lost")       │
 *   └──────────────────────────────┘
 */
#ifndef USOCKET_INTERNAL_H
#define USOCKET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <usocket.h>

#include "base.h"
#include "hub.h"

/* The socket's own read buffer: bytes [off, off + len) of buf. */
struct usock__rbuf {
    char *buf;
    size_t off, len, cap;
};

/* Allocated 64-byte aligned: the fields a recv or send and its wait touch
 * fill the first cache line, the read buffer and flags the second. */
struct usock {
    int fd;
    int type;
    struct usock__wait *rwait;    /* the task waiting to read */
    struct usock__wait *wwait;    /* the task waiting to write */
    struct usock_hub *hub;        /* hub whose reactor knows io, or NULL */
    struct usock__io io;          /* io.hot = &rwait */
    int64_t timeout;              /* ns; -1 none, 0 non-blocking */
    struct usock__rbuf rb;
    int family, proto;
    unsigned char listening;      /* listen() succeeded */
    unsigned char connected;      /* connect() or accept() succeeded */
    unsigned char tried;          /* connect() was called, or accepted */
    unsigned char drained;        /* the kernel's queue is likely empty:
                                     the last stream recv was short, or
                                     the last datagram had to be waited
                                     for */
    unsigned char burst;          /* reads in a row that found data
                                     without waiting (io.c RECV_BURST) */
    struct usock__tls *tls;       /* TLS state (tls.c), or NULL: plain */
};
_Static_assert(offsetof(struct usock, io) + sizeof(struct usock__io) <= 64,
               "the hot socket fields fit one cache line");
_Static_assert(sizeof(struct usock) <= 128, "a socket is two cache lines");

/* Test fixture counters: socket objects alive in the process; spawned
 * tasks alive on this thread's hub; the name of its reactor ("ev",
 * "poll") or NULL when it has none. */
USOCK__HIDDEN long usock__live_sockets(void);
USOCK__HIDDEN size_t usock__live_tasks(void);
USOCK__HIDDEN const char *usock__reactor_name(void);

/* Wrap an open non-blocking, close-on-exec fd.  NULL with errno ENOMEM
 * (the fd is then left open). */
USOCK__HIDDEN struct usock *usock__wrap(int fd, int family, int type,
                                        int proto);

/*
 * Wait until s is ready in direction `dir` (USOCK__IN or USOCK__OUT).
 * *dl is the call's deadline: USOCK__DL_UNSET on the first wait of a call
 * (it is then computed from s->timeout, once), 0 for non-blocking.
 * 0 when ready, or -1 with errno: EAGAIN (non-blocking), ETIMEDOUT,
 * ECANCELED, EBADF (closed while waiting), EBUSY (another task waits in
 * that direction), ENOMEM.
 */
USOCK__HIDDEN int usock__wait(struct usock *s, int dir, int64_t *dl);

/* Put w in s's slot for `dir` (USOCK__IN/OUT), watching `events` (dir, or 0
 * for none) on the current hub, which has a reactor.  A readiness event
 * wakes w with 0; usock__wake(w) or w->unlink(w) takes it out again.
 * 0, or -1 with errno EBUSY (the slot is taken). */
USOCK__HIDDEN int usock__watch(struct usock *s, struct usock__wait *w,
                               int dir, int events);

/* Like usock__wait but only for the timer: sleep until `until` (or *dl if
 * earlier) while holding the slot, so close and cancel still wake us.
 * 0 when `until` came, -1 with errno otherwise (ETIMEDOUT: *dl came). */
USOCK__HIDDEN int usock__backoff(struct usock *s, int dir, int64_t *dl,
                                 int64_t until);

/* One recv(2) (recvfrom(2) when `from` is not NULL, filling it), waiting
 * for data as long as *dl allows.  The count, or -1 with errno. */
USOCK__HIDDEN ssize_t usock__recv(struct usock *s, void *buf, size_t n,
                                  usock_addr_t *from, int64_t *dl);

/* Put n bytes back in front of the socket's read buffer.  0, or -1 ENOMEM. */
USOCK__HIDDEN int usock__unread(struct usock *s, const void *buf, size_t n);

/* Make buf (malloc'd, cap bytes, holding n bytes at off) the socket's read
 * buffer, its n bytes in front of those already buffered, without
 * allocating: for when usock__unread is out of memory.  0 (buf is the
 * socket's now), or -1 with errno ENOMEM when they do not all fit in cap
 * (buf is left to the caller). */
USOCK__HIDDEN int usock__rb_adopt(struct usock *s, char *buf, size_t cap,
                                  size_t off, size_t n);

/* Make room in rb for `want` more bytes after the buffered ones (moving
 * them to the front, or growing the buffer).  0, or -1 with errno ENOMEM. */
USOCK__HIDDEN int usock__rb_reserve(struct usock__rbuf *rb, size_t want);

/* Take up to n bytes from the socket's read buffer. */
USOCK__HIDDEN size_t usock__rb_take(struct usock *s, void *buf, size_t n);

/* Common argument check: s and (buf unless n == 0) non-NULL, n within
 * SSIZE_MAX.  0, or -1 with errno EINVAL. */
USOCK__HIDDEN int usock__check_io(const struct usock *s, const void *buf,
                                  size_t n);

/* Like usock__wait, but waiting in the slot of `slot` for readiness in
 * direction `events` (a TLS write may need input, a read room to send). */
USOCK__HIDDEN int usock__wait_for(struct usock *s, int slot, int events,
                                  int64_t *dl);

/* TLS (tls.c), on a socket with s->tls set: one SSL_read/SSL_write with
 * waits under *dl (the count, 0 at close_notify, or -1 with errno); bytes
 * OpenSSL holds for the next read; close (close_notify if it needs no
 * wait, then free); shutdown's close_notify (0 or -1 with errno). */
USOCK__HIDDEN ssize_t usock__tls_recv(struct usock *s, void *buf, size_t n,
                                      int64_t *dl);
USOCK__HIDDEN ssize_t usock__tls_send(struct usock *s, const void *buf,
                                      size_t n, int64_t *dl);
USOCK__HIDDEN int usock__tls_pending(const struct usock *s);
USOCK__HIDDEN void usock__tls_close(struct usock *s);
USOCK__HIDDEN int usock__tls_shutdown(struct usock *s);

/* Input a read can return without the kernel: the socket's own buffer, or
 * what TLS holds decrypted. */
static inline int usock__has_input(const struct usock *s)
{
    return s->rb.len || (s->tls && usock__tls_pending(s));
}
/*
 * Debug builds (--enable-debug, NDEBUG unset): usock_close poisons the
 * object instead of freeing it (type USOCK__CLOSED, fd -1; the memory is
 * kept for good), and the calls given a closed socket fail with EBADF and
 * a message on stderr, instead of a double free or a use after free.  A
 * debugging aid, not a contract.  usock__closed(s) is that check: 1 (errno
 * EBADF, message printed) for a poisoned socket; always 0 in release
 * builds.
 */
#define USOCK__CLOSED (-0x5eed)
#ifdef NDEBUG
static inline int usock__closed(const struct usock *s)
{
    (void)s;
    return 0;
}
#else
USOCK__HIDDEN int usock__closed(const struct usock *s);
#endif

#endif /* USOCKET_INTERNAL_H */
