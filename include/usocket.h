/*
 * usocket — the socket API of MicroPython's usocket and CPython's socket, in
 * C, over non-blocking fds in an event reactor with lightweight tasks.
 *
 * Every call returns -1 (or NULL) and sets errno on failure, like POSIX.
 * Time is a double count of seconds at this boundary; USOCK_NONE means
 * "block forever".  See usocket(7) for the model, and usock_*(3) for each
 * function.
 */
#ifndef USOCKET_H
#define USOCKET_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ========================================================================== */
/*  Version and ABI                                                           */
/* ========================================================================== */

#define USOCK_VERSION_MAJOR 0
#define USOCK_VERSION_MINOR 1
#define USOCK_VERSION_PATCH 0

/* ========================================================================== */
/*  Export macro                                                              */
/* ========================================================================== */

#if defined(__GNUC__) && __GNUC__ >= 4
#define USOCK_EXTERN __attribute__((visibility("default")))
#else
#define USOCK_EXTERN
#endif

/* ========================================================================== */
/*  Constants                                                                 */
/* ========================================================================== */

/* A timeout or deadline of USOCK_NONE means "no limit": block until done. */
#define USOCK_NONE (-1.0)

/* ========================================================================== */
/*  Value types                                                               */
/* ========================================================================== */

/*
 * An address of any family usocket speaks (AF_INET, AF_INET6, AF_UNIX).  A
 * complete value type: declare it on the stack, copy it with '='.  `len` is
 * the length of the sockaddr held in `u` (0 when empty); `u.sa.sa_family`
 * gives its family.  The layout is part of the ABI.
 */
typedef struct usock_addr {
    socklen_t len;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage ss;
    } u;
} usock_addr_t;

/* ========================================================================== */
/*  Addresses and name resolution                                             */
/* ========================================================================== */

/* Fill `a` from a numeric IPv4 or IPv6 address ("10.0.0.1", "::1",
 * "fe80::1%lo"; "" means 0.0.0.0) and a port in 0..65535.
 * Errors: EINVAL (NULL, malformed address, unknown scope, bad port). */
USOCK_EXTERN int usock_addr_ip(usock_addr_t *a, const char *ip, int port);

/* Fill `a` with an AF_UNIX address: a filesystem path, or "@name" for a Linux
 * abstract name.  Errors: EINVAL (NULL or ""), ENAMETOOLONG (does not fit in
 * sun_path). */
USOCK_EXTERN int usock_addr_unix(usock_addr_t *a, const char *path);

/* The port of an AF_INET/AF_INET6 address.  Errors: EINVAL (NULL),
 * EAFNOSUPPORT (another family). */
USOCK_EXTERN int usock_addr_port(const usock_addr_t *a);

/* Format `a` into buf: "127.0.0.1:80", "[::1]:80", "[fe80::1%lo]:80", a path,
 * or "@name".  Returns buf, or NULL with errno: EINVAL (NULL a or buf, or an
 * empty/unknown address), ENOSPC (n too small, n == 0 included; buf is
 * still NUL-terminated within n when n > 0). */
USOCK_EXTERN const char *usock_addr_format(const usock_addr_t *a, char *buf,
                                           size_t n);

/* One result of usock_getaddrinfo: the 5-tuple of the usocket documents. */
typedef struct usock_addrinfo {
    int family, type, proto;
    char *canonname;
    usock_addr_t addr;
    struct usock_addrinfo *next;
} usock_addrinfo_t;

/* Resolve host and port (0..65535) into a list freed with
 * usock_freeaddrinfo.  Runs off the calling task's stack and never stalls the
 * hub.  Returns 0, or an EAI_* code (EAI_SYSTEM with errno set: ETIMEDOUT,
 * ECANCELED, EINVAL for NULL res). */
USOCK_EXTERN int usock_getaddrinfo(const char *host, int port, int family,
                                   int type, int flags,
                                   usock_addrinfo_t **res);
USOCK_EXTERN void usock_freeaddrinfo(usock_addrinfo_t *res);

/* ========================================================================== */
/*  Socket objects: life cycle                                                */
/* ========================================================================== */

typedef struct usock usock_t;

/* A new non-blocking, close-on-exec socket with the default timeout.
 * family: AF_INET, AF_INET6, AF_UNIX; type: SOCK_STREAM, SOCK_DGRAM,
 * SOCK_RAW; proto 0 or the protocol.  Errors: EAFNOSUPPORT, EINVAL,
 * EPROTONOSUPPORT, EPERM (raw without privilege), EMFILE, ENFILE, ENOMEM. */
USOCK_EXTERN usock_t *usock_socket(int family, int type, int proto);

/* Close the socket and free the object (like fclose): tasks of this thread
 * blocked on it wake with EBADF.  Errors: EINVAL (NULL). */
USOCK_EXTERN int usock_close(usock_t *s);

/* The socket's file descriptor.  Errors: EINVAL (NULL). */
USOCK_EXTERN int usock_fileno(const usock_t *s);

/* ========================================================================== */
/*  Socket objects: connection set-up                                         */
/* ========================================================================== */

/* Errors: EINVAL (NULL, bad address or already bound), EAFNOSUPPORT (family
 * mismatch), and bind(2)'s own (EADDRINUSE, EADDRNOTAVAIL, EACCES). */
USOCK_EXTERN int usock_bind(usock_t *s, const usock_addr_t *a);

/* backlog < 0 picks a sensible default (SOMAXCONN).  Errors: EINVAL (NULL),
 * EOPNOTSUPP (not a stream socket). */
USOCK_EXTERN int usock_listen(usock_t *s, int backlog);

/* Wait for a connection, honouring the timeout; `peer` may be NULL.  The new
 * socket has the default timeout.  Errors: EINVAL (NULL, not listening),
 * EOPNOTSUPP (not a stream socket), EAGAIN (timeout 0), ETIMEDOUT, ECANCELED,
 * EBADF (closed while waiting), EBUSY (another task already waits), EMFILE/
 * ENFILE/ENOBUFS/ENOMEM (with timeout 0; otherwise retried with back-off). */
USOCK_EXTERN usock_t *usock_accept(usock_t *s, usock_addr_t *peer);

/* Connect, honouring the timeout.  Errors: EINVAL, EINPROGRESS (timeout 0),
 * ETIMEDOUT, ECANCELED, EBADF, EBUSY, EISCONN, ECONNREFUSED, ENETUNREACH … */
USOCK_EXTERN int usock_connect(usock_t *s, const usock_addr_t *a);

/* As usock_connect, but returns 0 or the errno value instead of -1. */
USOCK_EXTERN int usock_connect_ex(usock_t *s, const usock_addr_t *a);

/* ========================================================================== */
/*  Socket objects: data transfer                                             */
/* ========================================================================== */

/* Send at most n bytes in one system call (after waiting for room); returns
 * the count.  Never raises SIGPIPE.  Errors: EINVAL (NULL), EAGAIN (timeout
 * 0), ETIMEDOUT, ECANCELED, EBADF, EBUSY, EPIPE, ECONNRESET, ENOTCONN. */
USOCK_EXTERN ssize_t usock_send(usock_t *s, const void *buf, size_t n);

/* Send all n bytes; 0, or -1 with errno as usock_send (how much went out is
 * then unknown: use usock_write to know it). */
USOCK_EXTERN int usock_sendall(usock_t *s, const void *buf, size_t n);

USOCK_EXTERN ssize_t usock_sendto(usock_t *s, const void *buf, size_t n,
                                  const usock_addr_t *to);

/* Receive at most n bytes; 0 means orderly end of stream (or n == 0).
 * Bytes held in the socket's own buffer (from readline) come first.
 * Errors: EINVAL (NULL), EAGAIN, ETIMEDOUT, ECANCELED, EBADF, EBUSY,
 * ENOTCONN, ECONNRESET. */
USOCK_EXTERN ssize_t usock_recv(usock_t *s, void *buf, size_t n);
USOCK_EXTERN ssize_t usock_recvfrom(usock_t *s, void *buf, size_t n,
                                    usock_addr_t *from);

/* Read exactly n bytes, or fewer only at end of stream.  On failure no byte
 * is lost: what was received stays in the socket's buffer for the next
 * call.  Errors as usock_recv. */
USOCK_EXTERN ssize_t usock_read(usock_t *s, void *buf, size_t n);

/* Read through '\n' (included) into buf, at most n-1 bytes, NUL-terminated.
 * Returns the length (0 at end of stream); a line longer than n-1 comes back
 * in pieces of n-1 bytes.  No byte is lost on failure.  Errors: EINVAL (NULL,
 * n < 2), and as usock_recv. */
USOCK_EXTERN ssize_t usock_readline(usock_t *s, char *buf, size_t n);

/* Write all n bytes unless the timeout, the deadline, non-blocking mode or an
 * error stops it: returns the count written, with errno saying why when it
 * is short of n; -1 only when nothing was written. */
USOCK_EXTERN ssize_t usock_write(usock_t *s, const void *buf, size_t n);

/* A stdio stream over the socket: "rb", "wb" or "r+b".  fclose() flushes and
 * frees the FILE but does not close the socket.  Errors: EINVAL. */
USOCK_EXTERN FILE *usock_makefile(usock_t *s, const char *mode);

/* how: SHUT_RD, SHUT_WR, SHUT_RDWR.  Errors: EINVAL, ENOTCONN. */
USOCK_EXTERN int usock_shutdown(usock_t *s, int how);

/* ========================================================================== */
/*  Socket objects: options and timeouts                                      */
/* ========================================================================== */

USOCK_EXTERN int usock_setsockopt(usock_t *s, int level, int opt,
                                  const void *v, socklen_t len);
USOCK_EXTERN int usock_getsockopt(usock_t *s, int level, int opt, void *v,
                                  socklen_t *len);
USOCK_EXTERN int usock_setsockopt_int(usock_t *s, int level, int opt, int v);
USOCK_EXTERN int usock_getpeername(usock_t *s, usock_addr_t *a);
USOCK_EXTERN int usock_getsockname(usock_t *s, usock_addr_t *a);

/* USOCK_NONE: block; 0: non-blocking; t > 0: each call takes at most t
 * seconds.  Errors: EINVAL (NULL, negative, NaN, infinite). */
USOCK_EXTERN int usock_settimeout(usock_t *s, double seconds);

/* The timeout, USOCK_NONE for blocking.  Returns USOCK_NONE with errno
 * EINVAL for NULL. */
USOCK_EXTERN double usock_gettimeout(const usock_t *s);

/* flag != 0: same as settimeout(USOCK_NONE); 0: settimeout(0). */
USOCK_EXTERN int usock_setblocking(usock_t *s, int flag);

/* The timeout new sockets (and accepted ones) start with; initially
 * USOCK_NONE.  Invalid values are ignored. */
USOCK_EXTERN void usock_setdefaulttimeout(double seconds);
USOCK_EXTERN double usock_getdefaulttimeout(void);

/* ========================================================================== */
/*  Polling many sockets                                                      */
/* ========================================================================== */

struct usock_pollfd {
    usock_t *sock;
    short events, revents;
};

/* Wait until one of the sockets is ready (POLLIN, POLLOUT; POLLERR, POLLHUP
 * and POLLNVAL are always reported; NULL sock entries are ignored).  Returns
 * the number of entries with non-zero revents, 0 on timeout.  Errors:
 * EINVAL, ECANCELED, ETIMEDOUT (the task deadline came first), EBUSY
 * (another task waits on one of the sockets in that direction), ENOMEM. */
USOCK_EXTERN int usock_poll(struct usock_pollfd *fds, size_t n,
                            double timeout);

/* ========================================================================== */
/*  Tasks and the hub                                                         */
/* ========================================================================== */

/* Start fn(arg) as a new task on this thread's hub; it runs when the caller
 * blocks, yields or calls usock_run.  Returns its id (> 0).
 * Errors: EINVAL (NULL fn), ENOMEM. */
USOCK_EXTERN int usock_spawn(void (*fn)(void *arg), void *arg);

/* Wait until the task finishes (at once if it already has).
 * Errors: ESRCH (never issued), EDEADLK (self), ETIMEDOUT, ECANCELED. */
USOCK_EXTERN int usock_join(int task, double timeout);

/* Make the task's current and every later blocking call fail with
 * ECANCELED.  0 also for a finished task.  Errors: ESRCH. */
USOCK_EXTERN int usock_cancel(int task);

/* Errors: EINVAL (negative, NaN), ETIMEDOUT (the task deadline came first),
 * ECANCELED. */
USOCK_EXTERN int usock_sleep(double seconds);

/* Let the other ready tasks run.  Errors: ECANCELED. */
USOCK_EXTERN int usock_yield(void);

/* Run until every other task of this hub has finished.  Errors: ECANCELED
 * (the caller was cancelled), EDEADLK (called from a spawned task). */
USOCK_EXTERN int usock_run(void);

/* The id of the calling task (the thread's own context is a task too). */
USOCK_EXTERN int usock_self(void);

/* Monotonic clock, in seconds. */
USOCK_EXTERN double usock_now(void);

/* Set this task's deadline (absolute, on usock_now's clock, or USOCK_NONE):
 * every blocking call then ends at the earlier of it and its own timeout.
 * Returns the previous deadline, so scopes nest. */
USOCK_EXTERN double usock_setdeadline(double when);

/* The stack size of tasks spawned from now on (default 64 KiB; rounded up
 * to pages).  Errors: EINVAL (below 16 KiB or above 1 GiB). */
USOCK_EXTERN int usock_setstacksize(size_t bytes);

/* The most tasks one hub may have alive at once, in every thread from now
 * on (0: no cap, the default); usock_spawn beyond it fails with EAGAIN,
 * and posts wait until a task finishes.  Returns the previous cap. */
USOCK_EXTERN size_t usock_setmaxtasks(size_t n);

/* ========================================================================== */
/*  Hubs: embedding and many threads                                          */
/* ========================================================================== */

typedef struct usock_hub usock_hub_t;
struct ev_loop;

/* Run this thread's hub inside a daemon's libev loop; call it before any
 * other usocket call on the thread.  Errors: ENOTSUP (no libev, or
 * USOCKET_REACTOR=poll), EBUSY (the hub already exists), EINVAL (NULL). */
USOCK_EXTERN int usock_hub_use_ev_loop(struct ev_loop *loop);

/* This thread's hub (created if needed), or NULL with ENOMEM. */
USOCK_EXTERN usock_hub_t *usock_hub_self(void);

/* Thread-safe: run fn(arg) as a new task on hub h.  Errors: EINVAL, ENOMEM,
 * ESHUTDOWN (h is shutting down). */
USOCK_EXTERN int usock_hub_post(usock_hub_t *h, void (*fn)(void *), void *arg);

/* Thread-safe: cancel every task of hub h; its usock_run then returns once
 * they have finished.  Errors: EINVAL. */
USOCK_EXTERN int usock_hub_shutdown(usock_hub_t *h);

/* Embedding in any other loop (glib, libuv, poll, select): watch
 * usock_hub_fd() for reading beside the loop's own fds, wait at most
 * usock_hub_timeout() seconds (0: now; USOCK_NONE: no deadline), then call
 * usock_hub_run_nowait(), which runs what is ready without blocking and
 * returns the number of tasks still alive.  Errors: ENOTSUP (poll reactor;
 * usock_hub_timeout then returns USOCK_NONE), EBUSY (the hub uses a libev
 * loop), EDEADLK (run_nowait from a task), EMFILE, ENOMEM. */
USOCK_EXTERN int usock_hub_fd(void);
USOCK_EXTERN double usock_hub_timeout(void);
USOCK_EXTERN int usock_hub_run_nowait(void);

/* ========================================================================== */
/*  Conditions and channels: tasks and threads talking to each other          */
/* ========================================================================== */

/* Both are thread-safe: tasks of any hub and plain threads may share one.
 * Timeouts follow the socket rules (USOCK_NONE forever, 0 never waits:
 * EAGAIN, t > 0 at most t s: ETIMEDOUT), with the task deadline and cancel
 * (ECANCELED); waiters are served in FIFO order.  See usocket(7). */
typedef struct usock_cond usock_cond_t;
typedef struct usock_chan usock_chan_t;

/* A condition variable for tasks (State Threads' st_cond).  Errors: ENOMEM. */
USOCK_EXTERN usock_cond_t *usock_cond_new(void);

/* Wait until signalled.  Errors: EINVAL (NULL, bad timeout), EAGAIN (timeout
 * 0), ETIMEDOUT, ECANCELED, EBADF (freed while waiting). */
USOCK_EXTERN int usock_cond_wait(usock_cond_t *c, double timeout);

/* Wake the longest waiter, or every waiter; nothing is remembered when none
 * waits.  Errors: EINVAL (NULL). */
USOCK_EXTERN int usock_cond_signal(usock_cond_t *c);
USOCK_EXTERN int usock_cond_broadcast(usock_cond_t *c);

/* Free c (NULL is ignored); its waiters wake with EBADF. */
USOCK_EXTERN void usock_cond_free(usock_cond_t *c);

/* A FIFO of fixed-size items (Go's channels, gevent's Queue) holding up to
 * `capacity` items; capacity 0: each send waits for a receiver.
 * Errors: EINVAL (item_size 0), ENOMEM. */
USOCK_EXTERN usock_chan_t *usock_chan_new(size_t item_size, size_t capacity);

/* Copy item in, waiting while the channel is full.  Errors: EINVAL, EAGAIN,
 * ETIMEDOUT, ECANCELED, EPIPE (closed, whatever the timeout), EBADF (freed
 * while waiting). */
USOCK_EXTERN int usock_chan_send(usock_chan_t *ch, const void *item,
                                 double timeout);

/* Copy the oldest item out, waiting while the channel is empty.  Errors as
 * for send; EPIPE once closed and drained (even with timeout 0). */
USOCK_EXTERN int usock_chan_recv(usock_chan_t *ch, void *item, double timeout);

/* Later sends fail with EPIPE and blocked senders wake with EPIPE; receivers
 * drain what is queued, then get EPIPE.  Errors: EINVAL, EPIPE (closed
 * already). */
USOCK_EXTERN int usock_chan_close(usock_chan_t *ch);

/* Items buffered (never a blocked sender's; 0 for NULL). */
USOCK_EXTERN size_t usock_chan_len(const usock_chan_t *ch);

/* Free ch (NULL is ignored); its waiters wake with EBADF. */
USOCK_EXTERN void usock_chan_free(usock_chan_t *ch);

/* ========================================================================== */
/*  TLS (OpenSSL 3): wrap a connected stream socket in place                  */
/* ========================================================================== */

/* One configuration (an SSL_CTX), shared by many sockets and threads. */
typedef struct usock_tls usock_tls_t;

#define USOCK_TLS_CLIENT 0
#define USOCK_TLS_SERVER 1

/* cert_reqs, as in MicroPython's and CPython's ssl module. */
#define USOCK_CERT_NONE 0
#define USOCK_CERT_OPTIONAL 1
#define USOCK_CERT_REQUIRED 2

/* A client (USOCK_CERT_REQUIRED against the system trust store) or a server
 * (USOCK_CERT_NONE) configuration.  Errors: EINVAL, ENOMEM, ENOTSUP (built
 * --without-openssl). */
USOCK_EXTERN usock_tls_t *usock_tls_new(int side);

/* Present this certificate (PEM chain) and key (PEM; NULL: in certfile).
 * Errors: EINVAL (NULL, not PEM, key does not match), the errno of opening
 * a file (ENOENT, EACCES ...). */
USOCK_EXTERN int usock_tls_load_cert(usock_tls_t *t, const char *certfile,
                                     const char *keyfile);

/* Trust the CAs in cafile (PEM) and/or the hashed directory capath; either
 * may be NULL, not both.  Errors as usock_tls_load_cert. */
USOCK_EXTERN int usock_tls_load_ca(usock_tls_t *t, const char *cafile,
                                   const char *capath);

/* Trust the PEM certificates in memory (MicroPython's and CPython's
 * cadata).  Errors: EINVAL (NULL, no certificate in it), ENOMEM. */
USOCK_EXTERN int usock_tls_load_cadata(usock_tls_t *t, const char *pem,
                                       size_t len);

/* USOCK_CERT_NONE, _OPTIONAL or _REQUIRED, for sockets wrapped from now on.
 * Errors: EINVAL. */
USOCK_EXTERN int usock_tls_set_verify(usock_tls_t *t, int cert_reqs);

/* ALPN protocols in order of preference, comma-separated ("h2,http/1.1").
 * Errors: EINVAL (NULL, empty, a name longer than 255), ENOMEM. */
USOCK_EXTERN int usock_tls_set_alpn(usock_tls_t *t, const char *protocols);

/* Drop the configuration; sockets wrapped with it keep working.  NULL is
 * ignored. */
USOCK_EXTERN void usock_tls_free(usock_tls_t *t);

/* Run the TLS handshake on the connected stream socket s, under its timeout
 * and the task deadline; afterwards every socket call on s speaks TLS.
 * Client: server_hostname is sent as SNI and checked (a DNS name), or
 * checked as an IP address; server: NULL.  Errors: EINVAL, EOPNOTSUPP (not a
 * stream), ENOTCONN, EALREADY (already wrapped), EAGAIN (timeout 0: call
 * again to continue), ETIMEDOUT, ECANCELED, EPROTO (TLS failure),
 * EKEYREJECTED (the peer's certificate failed verification), ECONNRESET,
 * ENOMEM, ENOTSUP. */
USOCK_EXTERN int usock_tls_wrap(usock_t *s, usock_tls_t *t,
                                const char *server_hostname);

/* Exchange close_notify and make s plain again; bytes after the peer's
 * close_notify stay for the next read.  Errors: EINVAL (not wrapped), the
 * errors of usock_tls_wrap. */
USOCK_EXTERN int usock_tls_unwrap(usock_t *s);

/* The negotiated ALPN protocol, or NULL. */
USOCK_EXTERN const char *usock_tls_alpn(const usock_t *s);

/* OpenSSL's text for the last TLS failure on s, or NULL. */
USOCK_EXTERN const char *usock_tls_error(const usock_t *s);

/* The peer certificate's subject (RFC 2253: "CN=localhost,O=..."), or NULL
 * when the peer sent none. */
USOCK_EXTERN const char *usock_tls_peer_subject(const usock_t *s);

/* The negotiated protocol version ("TLSv1.3"), or NULL before the handshake
 * completed. */
USOCK_EXTERN const char *usock_tls_version(const usock_t *s);

/* 1 when the handshake resumed a session (a client configuration offers the
 * last session it got from the same server name and port), 0 when it was a
 * full handshake.  Errors: EINVAL (NULL, not wrapped), ENOTSUP. */
USOCK_EXTERN int usock_tls_session_reused(const usock_t *s);

#ifdef __cplusplus
}
#endif

#endif /* USOCKET_H */
