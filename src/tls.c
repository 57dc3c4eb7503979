/*
 * TLS on OpenSSL 3: usock_tls_t is an SSL_CTX; a wrapped socket holds an SSL
 * whose BIO is ours and never blocks.
 *
 *   usock_t ── tls ──▶ struct usock__tls ── ssl ──▶ SSL ── BIO (ours)
 *                        in: ciphertext that            read:  in, then recv(2)
 *                            arrived before the wrap    write: send(2),
 *                        cfg ──▶ usock_tls_t (refs)            MSG_NOSIGNAL
 *
 * The BIO callbacks only try: on EAGAIN they set the retry flag and return.
 * The waiting happens here, in the task, in the direction OpenSSL asks for
 * (SSL_ERROR_WANT_READ / _WANT_WRITE), under the call's one deadline.  A
 * reader waits in the socket's read slot and a writer in its write slot
 * whatever the direction, so one reader and one writer task can share the
 * SSL (full duplex; doc/internals.md).  SSL calls never yield, so two tasks
 * never interleave inside one.  When a call of one side takes input off the
 * socket (a write that had to read a handshake message; a read that took a
 * record the writer waited for), the other side's waiter is woken to try
 * again: its fd readiness may have been consumed.
 *
 * OpenSSL's read-ahead stays off, so it takes each record exactly (header,
 * then body) and bytes after a close_notify stay in the kernel for
 * usock_tls_unwrap.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifdef HAVE_OPENSSL

#include <arpa/inet.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define SESSION_CACHE 16

struct usock_tls {
    SSL_CTX *ctx;
    int side;
    int verify;
    atomic_int refs;          /* the handle's own, plus one per socket */
    unsigned char *alpn;      /* wire format: length-prefixed names */
    size_t alpn_len;
    /* Client session cache: the last session per server name and port,
     * offered again by the next wrap to the same server.  Guarded by
     * lock: a configuration may be shared by many threads. */
    pthread_mutex_t lock;
    struct {
        char key[280];        /* "name port" */
        SSL_SESSION *sess;
    } cache[SESSION_CACHE];
    unsigned next;            /* the slot to reuse when none matches */
};

struct usock__tls {
    SSL *ssl;
    struct usock_tls *cfg;
    struct usock__rbuf in;    /* ciphertext buffered before the wrap */
    struct usock__rbuf out;   /* ciphertext OpenSSL gave the BIO that the
                                 kernel has not taken yet (at most about a
                                 record, and what reads wrote behind it) */
    size_t nread;             /* bytes the BIO took in, ever */
    int sys_errno;            /* errno of the BIO's last failed system call */
    int fatal;                /* errno of a fatal failure: no more I/O */
    unsigned char done;       /* the handshake completed */
    unsigned char eof;        /* close_notify received: reads return 0 */
    unsigned char shut;       /* our close_notify is out */
    char *subject;            /* peer subject, made on first ask */
    char key[280];            /* client: the session cache key, or "" */
    char alpn[256];
    char err[256];            /* text of the last failure, or "" */
};

/* What a loop iteration asks OpenSSL to do. */
enum { OP_HANDSHAKE, OP_READ, OP_WRITE, OP_SHUTDOWN };

/* ========================================================================== */
/*  The BIO: the socket's fd, never blocking                                  */
/* ========================================================================== */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* Read-ahead of the BIO: a record and its header in one recv(2), or
 * several records.  Allocated while the connection is busy, freed when the
 * kernel has nothing more (idle connections hold none). */
#define IN_CHUNK ((size_t)18 * 1024)

/*
 * OpenSSL asks for a record header (5 bytes), then its body.  One recv(2)
 * of up to IN_CHUNK into t->in serves both, and often the next records:
 * half the system calls of a socket BIO.  What t->in holds counts as input
 * for usock_poll, and usock_tls_unwrap gives back what follows the
 * close_notify.
 */
static int bio_read(BIO *b, char *buf, int len)
{
    struct usock *s = BIO_get_data(b);
    struct usock__tls *t = s->tls;
    struct usock__rbuf *in = &t->in;

    BIO_clear_retry_flags(b);
    if (len <= 0) {
        return 0;
    }
    while (in->len == 0) {
        if (in->cap < IN_CHUNK) {
            free(in->buf);
            *in = (struct usock__rbuf){0};
            in->buf = malloc(IN_CHUNK);
            if (!in->buf) {
                t->sys_errno = ENOMEM;
                return -1;
            }
            in->cap = IN_CHUNK;
        }
        ssize_t r = recv(s->fd, in->buf, in->cap, 0);
        if (r > 0) {
            in->off = 0;
            in->len = (size_t)r;
            break;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        free(in->buf);
        *in = (struct usock__rbuf){0};
        if (r == 0) {
            return 0; /* end of stream */
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            BIO_set_retry_read(b);
        } else {
            t->sys_errno = errno;
        }
        return -1;
    }
    size_t k = in->len < (size_t)len ? in->len : (size_t)len;
    memcpy(buf, in->buf + in->off, k);
    in->off += k;
    in->len -= k;
    t->nread += k;
    return (int)k;
}

/* Put n bytes at the end of rb.  0, or -1 with errno ENOMEM. */
static int rb_append(struct usock__rbuf *rb, const void *buf, size_t n)
{
    if (usock__rb_reserve(rb, n) < 0) {
        return -1;
    }
    memcpy(rb->buf + rb->off + rb->len, buf, n);
    rb->len += n;
    return 0;
}

/*
 * The write side never tells OpenSSL to retry: what the kernel does not take
 * goes to t->out, and the I/O loop sends it before the next SSL_write.  So
 * OpenSSL's own write buffer is never left half sent, and a read that has
 * to answer (a KeyUpdate, a renegotiation) while a writer is blocked just
 * queues its record behind the writer's, instead of failing with "bad
 * length" or "bad write retry".
 */
static int bio_write(BIO *b, const char *buf, int len)
{
    struct usock *s = BIO_get_data(b);
    struct usock__tls *t = s->tls;
    size_t done = 0;

    BIO_clear_retry_flags(b);
    while (t->out.len == 0 && done < (size_t)len) {
        ssize_t r = send(s->fd, buf + done, (size_t)len - done, MSG_NOSIGNAL);
        if (r >= 0) {
            done += (size_t)r;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            t->sys_errno = errno;
            return -1;
        }
        break;
    }
    if (done < (size_t)len &&
        rb_append(&t->out, buf + done, (size_t)len - done) < 0) {
        t->sys_errno = ENOMEM;
        return -1;
    }
    return len;
}

/* Send what t->out holds.  0 when it is empty, 1 when the kernel is full,
 * -1 with errno (the connection failed for good: t->fatal is set). */
static int flush_out(struct usock *s)
{
    struct usock__tls *t = s->tls;

    while (t->out.len) {
        ssize_t r = send(s->fd, t->out.buf + t->out.off, t->out.len,
                         MSG_NOSIGNAL);
        if (r >= 0) {
            t->out.off += (size_t)r;
            t->out.len -= (size_t)r;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 1;
        }
        if (!t->fatal) {
            t->fatal = errno;
            snprintf(t->err, sizeof(t->err), "%s", strerror(errno));
        }
        errno = t->fatal;
        return -1;
    }
    free(t->out.buf);
    t->out = (struct usock__rbuf){0};
    return 0;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_setup(void)
{
    int idx = BIO_get_new_index();
    BIO_METHOD *m;

    if (idx < 0) {
        return;
    }
    m = BIO_meth_new(idx | BIO_TYPE_SOURCE_SINK, "usocket");
    if (!m) {
        return;
    }
    if (!BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

/* ========================================================================== */
/*  Configurations                                                            */
/* ========================================================================== */

static void cfg_unref(struct usock_tls *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        for (int i = 0; i < SESSION_CACHE; i++) {
            SSL_SESSION_free(c->cache[i].sess);
        }
        pthread_mutex_destroy(&c->lock);
        SSL_CTX_free(c->ctx);
        free(c->alpn);
        free(c);
    }
}

/* Apply c->verify to the SSL_CTX. */
static void apply_verify(struct usock_tls *c)
{
    int mode = SSL_VERIFY_NONE;

    if (c->verify != USOCK_CERT_NONE) {
        mode = SSL_VERIFY_PEER;
        if (c->side == USOCK_TLS_SERVER) {
            mode |= SSL_VERIFY_CLIENT_ONCE;
            if (c->verify == USOCK_CERT_REQUIRED) {
                mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
            }
        }
    }
    SSL_CTX_set_verify(c->ctx, mode, NULL);
}

/* A client got a session (TLS 1.3: a ticket, after the handshake): keep it
 * for the next wrap to the same server.  1: we took the reference. */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct usock_tls *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct usock__tls *t = SSL_get_app_data(ssl);
    int i, slot = -1;

    if (!c || !t || !t->key[0] || !SSL_SESSION_is_resumable(sess)) {
        return 0;
    }
    pthread_mutex_lock(&c->lock);
    for (i = 0; i < SESSION_CACHE && slot < 0; i++) {
        if (strcmp(c->cache[i].key, t->key) == 0) {
            slot = i;
        }
    }
    if (slot < 0) {
        slot = (int)(c->next++ % SESSION_CACHE);
        snprintf(c->cache[slot].key, sizeof(c->cache[slot].key), "%s", t->key);
    }
    SSL_SESSION_free(c->cache[slot].sess);
    c->cache[slot].sess = sess;
    pthread_mutex_unlock(&c->lock);
    return 1;
}

/* Offer the cached session for t->key, if any. */
static void offer_session(struct usock_tls *c, struct usock__tls *t)
{
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < SESSION_CACHE; i++) {
        if (c->cache[i].sess && strcmp(c->cache[i].key, t->key) == 0) {
            SSL_set_session(t->ssl, c->cache[i].sess);
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

usock_tls_t *usock_tls_new(int side)
{
    struct usock_tls *c;

    if (side != USOCK_TLS_CLIENT && side != USOCK_TLS_SERVER) {
        errno = EINVAL;
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    ERR_clear_error();
    c->ctx = SSL_CTX_new(side == USOCK_TLS_CLIENT ? TLS_client_method()
                                                  : TLS_server_method());
    if (!c->ctx) {
        ERR_clear_error();
        free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->side = side;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    SSL_CTX_set_app_data(c->ctx, c);
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
    if (side == USOCK_TLS_CLIENT) {
        c->verify = USOCK_CERT_REQUIRED;
        /* No trust store installed is not an error: usock_tls_load_ca. */
        SSL_CTX_set_default_verify_paths(c->ctx);
        SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_CLIENT |
                                                   SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(c->ctx, new_session);
    } else {
        c->verify = USOCK_CERT_NONE;
        /* Clients may not renegotiate (a cheap way to load a server). */
        SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION);
    }
    apply_verify(c);
    ERR_clear_error();
    return c;
}

void usock_tls_free(usock_tls_t *t)
{
    if (t) {
        cfg_unref(t);
    }
}

/* Can the file (or directory, dir != 0) be opened?  0, or -1 with its
 * errno. */
static int can_open(const char *path, int dir)
{
    if (dir) {
        DIR *d = opendir(path);
        if (!d) {
            return -1;
        }
        closedir(d);
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    fclose(f);
    return 0;
}

/* An OpenSSL configuration call failed: ENOMEM or EINVAL (bad contents). */
static int cfg_failed(void)
{
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    return usock__fail(ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE ? ENOMEM
                                                                  : EINVAL);
}

int usock_tls_load_cert(usock_tls_t *t, const char *certfile,
                        const char *keyfile)
{
    if (!t || !certfile) {
        return usock__fail(EINVAL);
    }
    if (!keyfile) {
        keyfile = certfile;
    }
    if (can_open(certfile, 0) < 0 || can_open(keyfile, 0) < 0) {
        return -1;
    }
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(t->ctx, certfile) != 1 ||
        SSL_CTX_use_PrivateKey_file(t->ctx, keyfile, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1) {
        return cfg_failed();
    }
    return 0;
}

int usock_tls_load_ca(usock_tls_t *t, const char *cafile, const char *capath)
{
    if (!t || (!cafile && !capath)) {
        return usock__fail(EINVAL);
    }
    if ((cafile && can_open(cafile, 0) < 0) ||
        (capath && can_open(capath, 1) < 0)) {
        return -1;
    }
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(t->ctx, cafile, capath) != 1) {
        return cfg_failed();
    }
    if (cafile && t->side == USOCK_TLS_SERVER) {
        /* Name these CAs in the certificate request, as s_server does. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cafile);
        if (names) {
            SSL_CTX_set_client_CA_list(t->ctx, names);
        }
    }
    ERR_clear_error();
    return 0;
}

int usock_tls_load_cadata(usock_tls_t *t, const char *pem, size_t len)
{
    X509_STORE *store;
    BIO *b;
    X509 *x;
    int n = 0;

    if (!t || !pem || len == 0 || len > INT32_MAX) {
        return usock__fail(EINVAL);
    }
    ERR_clear_error();
    b = BIO_new_mem_buf(pem, (int)len);
    if (!b) {
        return usock__fail(ENOMEM);
    }
    store = SSL_CTX_get_cert_store(t->ctx);
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        int ok = X509_STORE_add_cert(store, x);
        X509_free(x);
        if (!ok) {
            BIO_free(b);
            return cfg_failed();
        }
        n++;
    }
    BIO_free(b);
    ERR_clear_error(); /* the end of the input reads as an error */
    return n ? 0 : usock__fail(EINVAL);
}

int usock_tls_set_verify(usock_tls_t *t, int cert_reqs)
{
    if (!t || cert_reqs < USOCK_CERT_NONE || cert_reqs > USOCK_CERT_REQUIRED) {
        return usock__fail(EINVAL);
    }
    t->verify = cert_reqs;
    apply_verify(t);
    return 0;
}

/* A server's pick among the client's offers: ours in our order of
 * preference; no ALPN at all when nothing matches (as CPython does). */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    struct usock_tls *c = arg;
    unsigned char *o;

    (void)ssl;
    if (SSL_select_next_proto(&o, outlen, c->alpn, (unsigned)c->alpn_len, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

int usock_tls_set_alpn(usock_tls_t *t, const char *protocols)
{
    size_t n, i, start = 0, k = 0;
    unsigned char *w;

    if (!t || !protocols || !*protocols) {
        return usock__fail(EINVAL);
    }
    n = strlen(protocols);
    w = malloc(n + 1);
    if (!w) {
        return usock__fail(ENOMEM);
    }
    for (i = 0; i <= n; i++) {
        if (i == n || protocols[i] == ',') {
            size_t len = i - start;
            if (len == 0 || len > 255) {
                free(w);
                return usock__fail(EINVAL);
            }
            w[k++] = (unsigned char)len;
            memcpy(w + k, protocols + start, len);
            k += len;
            start = i + 1;
        }
    }
    if (t->side == USOCK_TLS_CLIENT &&
        SSL_CTX_set_alpn_protos(t->ctx, w, (unsigned)k) != 0) {
        free(w);
        return cfg_failed();
    }
    free(t->alpn);
    t->alpn = w;
    t->alpn_len = k;
    if (t->side == USOCK_TLS_SERVER) {
        SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select, t);
    }
    return 0;
}

/* ========================================================================== */
/*  The I/O loop                                                              */
/* ========================================================================== */

/* The call failed for good (e: SSL_get_error's answer): keep its errno and
 * text on the socket; no more I/O on this SSL. */
static int tls_failed(struct usock__tls *t, int e)
{
    unsigned long err = ERR_peek_last_error();
    int reason = err ? ERR_GET_REASON(err) : 0;
    long vr = SSL_get_verify_result(t->ssl);
    int code;

    if (e == SSL_ERROR_SYSCALL || reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        /* The stream ended (or broke) without close_notify. */
        code = t->sys_errno ? t->sys_errno : ECONNRESET;
        if (err && !t->sys_errno) {
            ERR_error_string_n(err, t->err, sizeof(t->err));
        } else {
            snprintf(t->err, sizeof(t->err), "%s",
                     t->sys_errno ? strerror(code)
                                  : "unexpected end of stream (no close_notify)");
        }
    } else if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED ||
               reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        code = EKEYREJECTED;
        ERR_error_string_n(err, t->err, sizeof(t->err));
        if (vr != X509_V_OK) {
            size_t l = strlen(t->err);
            snprintf(t->err + l, sizeof(t->err) - l, ": %s",
                     X509_verify_cert_error_string(vr));
        }
    } else {
        code = EPROTO;
        if (err) {
            ERR_error_string_n(err, t->err, sizeof(t->err));
        } else {
            snprintf(t->err, sizeof(t->err), "TLS failure (SSL error %d)", e);
        }
    }
    t->fatal = code;
    return code;
}

/* Wake the other side's waiter (the reader when we are the writer and the
 * other way round) when it waits for input: we took input off the socket,
 * or failed, so its wait may never end by itself. */
static void poke_other(struct usock *s, int slot)
{
    struct usock__wait *w = slot == USOCK__IN ? s->wwait : s->rwait;

    if (w && (w->dir & USOCK__IN) && s->hub == usock__tls_hub) {
        usock__wake(w, 0);
    }
}

/* SSL_write took `got` bytes but the kernel has not taken all of their
 * record: send the rest before returning, as a plain send leaves its bytes
 * with the kernel.  If the deadline (or a cancel) comes first, the count
 * stands: the rest goes out first on the next call on s. */
static ssize_t write_done(struct usock *s, size_t got, int64_t *dl)
{
    struct usock__tls *t = s->tls;

    while (t->out.len) {
        if (flush_out(s) < 0) {
            return -1; /* the connection broke: the bytes are lost */
        }
        if (t->out.len && usock__wait_for(s, USOCK__OUT, USOCK__OUT, dl) < 0) {
            return errno == EBADF ? -1 : (ssize_t)got;
        }
    }
    return (ssize_t)got;
}

/* Do op until it succeeds or fails, waiting in the direction OpenSSL asks
 * for, in the slot of the caller's own direction.  Writes, shutdown and the
 * handshake first send what t->out holds (and shutdown waits until its
 * close_notify is out); a read waiting for input with output queued waits
 * for room too.  The count (OP_READ, OP_WRITE), 0 (close_notify for
 * OP_READ; done for the others), or -1 with errno. */
static ssize_t tls_run(struct usock *s, int op, void *buf, size_t n,
                       int64_t *dl)
{
    struct usock__tls *t = s->tls;
    int slot = op == OP_WRITE || op == OP_SHUTDOWN ? USOCK__OUT : USOCK__IN;
    int called = 0; /* OP_SHUTDOWN: SSL_shutdown has run */

    for (;;) {
        size_t got = 0, before = t->nread;
        int r, e, dir, wslot;

        if (t->fatal) {
            return usock__fail(t->fatal);
        }
        if (t->out.len && flush_out(s) < 0) {
            poke_other(s, slot);
            return -1;
        }
        if (t->out.len && op != OP_READ) {
            /* Room first: OpenSSL gets a write only with t->out empty. */
            wslot = op == OP_HANDSHAKE ? USOCK__OUT : slot;
            if (usock__wait_for(s, wslot, USOCK__OUT, dl) < 0) {
                return -1;
            }
            continue;
        }
        if (op == OP_SHUTDOWN && called) {
            return 0; /* the close_notify is out */
        }
        ERR_clear_error();
        t->sys_errno = 0;
        switch (op) {
        case OP_HANDSHAKE:
            r = SSL_do_handshake(t->ssl);
            break;
        case OP_READ:
            r = SSL_read_ex(t->ssl, buf, n, &got);
            break;
        case OP_WRITE:
            r = SSL_write_ex(t->ssl, buf, n, &got);
            break;
        default:
            r = SSL_shutdown(t->ssl);
            r = r >= 0 ? 1 : r; /* 0: sent, the peer's not yet seen */
            break;
        }
        e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        switch (e) {
        case SSL_ERROR_NONE:
            dir = 0;
            break;
        case SSL_ERROR_WANT_READ:
            dir = USOCK__IN;
            break;
        case SSL_ERROR_WANT_WRITE:
            dir = USOCK__OUT;
            break;
        case SSL_ERROR_ZERO_RETURN:
            t->eof = 1;
            dir = 0;
            break;
        default:
            tls_failed(t, e);
            dir = 0;
            break;
        }
        ERR_clear_error();
        if (t->out.len) {
            /* One try; the loop or the next call goes on.  After a fatal
             * error this is the alert going out, if the socket has room. */
            flush_out(s);
        }
        if (t->nread != before || t->fatal || t->eof) {
            poke_other(s, slot);
        }
        if (t->fatal) {
            return usock__fail(t->fatal);
        }
        if (op == OP_SHUTDOWN && dir == 0) {
            called = 1;
            continue; /* until t->out is empty */
        }
        if (dir == 0 && op == OP_WRITE && t->out.len) {
            return write_done(s, got, dl);
        }
        if (dir == 0) {
            return (ssize_t)got;
        }
        if (t->out.len) {
            dir |= USOCK__OUT;
        }
        wslot = op == OP_HANDSHAKE ? (dir & USOCK__IN ? USOCK__IN : USOCK__OUT)
                                   : slot;
        if (usock__wait_for(s, wslot, dir, dl) < 0) {
            return -1; /* s may be gone (EBADF) */
        }
    }
}

ssize_t usock__tls_recv(struct usock *s, void *buf, size_t n, int64_t *dl)
{
    struct usock__tls *t = s->tls;

    if (t->eof) {
        return 0;
    }
    if (n == 0) {
        return 0;
    }
    return tls_run(s, OP_READ, buf, n, dl);
}

ssize_t usock__tls_send(struct usock *s, const void *buf, size_t n,
                        int64_t *dl)
{
    struct usock__tls *t = s->tls;

    if (t->fatal) {
        return usock__fail(t->fatal);
    }
    if (t->shut) {
        return usock__fail(EPIPE);
    }
    if (n == 0) {
        return 0;
    }
    return tls_run(s, OP_WRITE, (void *)buf, n, dl);
}

int usock__tls_pending(const struct usock *s)
{
    const struct usock__tls *t = s->tls;
    const unsigned char *h = (const unsigned char *)t->in.buf + t->in.off;

    /* A read returns at once: decrypted bytes, the end, the error, or a
     * whole record read ahead.  After any SSL call t->in starts at a record
     * (OpenSSL takes all of it while it finishes one), so its header says
     * whether the record is complete.  (Not SSL_has_pending: OpenSSL holds
     * at most part of a record, whose rest is not here yet.) */
    return t->eof || t->fatal || (t->done && SSL_pending(t->ssl) > 0) ||
           (t->in.len >= 5 && t->in.len >= 5 + ((size_t)h[3] << 8 | h[4]));
}

static void tls_free(struct usock *s)
{
    struct usock__tls *t = s->tls;

    SSL_free(t->ssl); /* frees the BIO */
    cfg_unref(t->cfg);
    free(t->in.buf);
    free(t->out.buf);
    free(t->subject);
    free(t);
    s->tls = NULL;
}

void usock__tls_close(struct usock *s)
{
    struct usock__tls *t = s->tls;

    /* One try, never a wait: what is queued, then the close_notify, go out
     * if the socket has room. */
    if (t->done && !t->fatal && flush_out(s) == 0 && !t->shut) {
        ERR_clear_error();
        SSL_shutdown(t->ssl);
        ERR_clear_error();
        if (t->out.len) {
            flush_out(s);
        }
    }
    tls_free(s);
}

int usock__tls_shutdown(struct usock *s)
{
    struct usock__tls *t = s->tls;
    int64_t dl = USOCK__DL_UNSET;

    if (t->shut || !t->done || t->fatal) {
        return 0; /* nothing to say: shut the TCP side */
    }
    if (tls_run(s, OP_SHUTDOWN, NULL, 0, &dl) < 0) {
        return -1;
    }
    t->shut = 1;
    return 0;
}

/* ========================================================================== */
/*  Wrap and unwrap                                                           */
/* ========================================================================== */

static int is_ip(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Run (or continue) the handshake of s. */
static int handshake(struct usock *s)
{
    struct usock__tls *t = s->tls;
    int64_t dl = USOCK__DL_UNSET;

    if (tls_run(s, OP_HANDSHAKE, NULL, 0, &dl) < 0) {
        if (errno == ETIMEDOUT && !t->err[0]) {
            snprintf(t->err, sizeof(t->err), "handshake timed out");
        }
        return -1;
    }
    t->done = 1;
    return 0;
}

int usock_tls_wrap(usock_t *s, usock_tls_t *cfg, const char *server_hostname)
{
    struct usock__tls *t;
    usock_addr_t peer;

    if (!s) {
        return usock__fail(EINVAL);
    }
    if (s->tls) {
        if (s->tls->done) {
            return usock__fail(EALREADY);
        }
        if (usock__cancelled()) {
            return usock__fail(ECANCELED);
        }
        return handshake(s); /* continue (timeout 0), or fail again */
    }
    if (!cfg) {
        return usock__fail(EINVAL);
    }
    if (s->type != SOCK_STREAM) {
        return usock__fail(EOPNOTSUPP);
    }
    if (cfg->side == USOCK_TLS_SERVER ? server_hostname != NULL
                                      : (!server_hostname &&
                                         cfg->verify == USOCK_CERT_REQUIRED)) {
        return usock__fail(EINVAL);
    }
    if (s->listening || usock_getpeername(s, &peer) < 0) {
        return usock__fail(ENOTCONN);
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    pthread_once(&bio_once, bio_setup);
    if (!bio_method) {
        return usock__fail(ENOMEM);
    }
    t = calloc(1, sizeof(*t));
    if (!t) {
        return usock__fail(ENOMEM);
    }
    ERR_clear_error();
    t->ssl = SSL_new(cfg->ctx);
    BIO *b = t->ssl ? BIO_new(bio_method) : NULL;
    if (!b) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return usock__fail(ENOMEM);
    }
    BIO_set_data(b, s);
    SSL_set_bio(t->ssl, b, b);
    SSL_set_app_data(t->ssl, t);
    if (cfg->side == USOCK_TLS_CLIENT) {
        SSL_set_connect_state(t->ssl);
        if (server_hostname && strlen(server_hostname) < 256) {
            /* Resume only with the same name and verification. */
            snprintf(t->key, sizeof(t->key), "%s %d %d", server_hostname,
                     usock_addr_port(&peer), cfg->verify);
            offer_session(cfg, t);
        }
        if (server_hostname) {
            int ok = 1, ip = is_ip(server_hostname);
            if (!ip) {
                ok = SSL_set_tlsext_host_name(t->ssl, server_hostname) == 1;
            }
            if (ok && cfg->verify != USOCK_CERT_NONE) {
                ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl),
                                                         server_hostname) == 1
                        : SSL_set1_host(t->ssl, server_hostname) == 1;
            }
            if (!ok) {
                SSL_free(t->ssl);
                free(t);
                ERR_clear_error();
                return usock__fail(EINVAL);
            }
        }
    } else {
        SSL_set_accept_state(t->ssl);
    }
    ERR_clear_error();
    atomic_fetch_add(&cfg->refs, 1);
    t->cfg = cfg;
    /* What the socket buffered before the wrap is the peer's first TLS
     * bytes: the BIO reads them first. */
    t->in = s->rb;
    s->rb = (struct usock__rbuf){0};
    if (t->in.len == 0) {
        free(t->in.buf);
        t->in = (struct usock__rbuf){0};
    }
    s->tls = t;
    s->drained = 0;
    return handshake(s);
}

int usock_tls_unwrap(usock_t *s)
{
    struct usock__tls *t;
    int64_t dl = USOCK__DL_UNSET;
    char buf[4096];

    if (!s || !s->tls || !s->tls->done) {
        return usock__fail(EINVAL);
    }
    t = s->tls;
    if (t->fatal) {
        return usock__fail(t->fatal);
    }
    if (usock__cancelled()) {
        return usock__fail(ECANCELED);
    }
    if (!t->shut) {
        if (tls_run(s, OP_SHUTDOWN, NULL, 0, &dl) < 0) {
            return -1;
        }
        t->shut = 1;
    }
    /* Plaintext before the peer's close_notify is still data: keep it, in
     * order, ahead of what follows the close_notify. */
    while (!t->eof) {
        ssize_t r = tls_run(s, OP_READ, buf, sizeof(buf), &dl);
        if (r < 0) {
            return -1;
        }
        if (r > 0 && rb_append(&s->rb, buf, (size_t)r) < 0) {
            return -1;
        }
    }
    if (t->in.len && rb_append(&s->rb, t->in.buf + t->in.off, t->in.len) < 0) {
        return -1;
    }
    tls_free(s);
    return 0;
}

/* ========================================================================== */
/*  Queries                                                                   */
/* ========================================================================== */

const char *usock_tls_alpn(const usock_t *s)
{
    const unsigned char *p;
    unsigned len;
    struct usock__tls *t = s ? s->tls : NULL;

    if (!t || !t->done) {
        return NULL;
    }
    SSL_get0_alpn_selected(t->ssl, &p, &len);
    if (!p || len == 0) {
        return NULL;
    }
    memcpy(t->alpn, p, len);
    t->alpn[len] = '\0';
    return t->alpn;
}

const char *usock_tls_error(const usock_t *s)
{
    struct usock__tls *t = s ? s->tls : NULL;
    return t && t->err[0] ? t->err : NULL;
}

const char *usock_tls_peer_subject(const usock_t *s)
{
    struct usock__tls *t = s ? s->tls : NULL;

    if (!t || !t->done) {
        return NULL;
    }
    if (!t->subject) {
        X509 *x = SSL_get0_peer_certificate(t->ssl);
        BIO *m;
        char *p;
        long n;
        if (!x || !(m = BIO_new(BIO_s_mem()))) {
            return NULL;
        }
        X509_NAME_print_ex(m, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        n = BIO_get_mem_data(m, &p);
        t->subject = malloc((size_t)n + 1);
        if (t->subject) {
            memcpy(t->subject, p, (size_t)n);
            t->subject[n] = '\0';
        }
        BIO_free(m);
        ERR_clear_error();
    }
    return t->subject;
}

const char *usock_tls_version(const usock_t *s)
{
    struct usock__tls *t = s ? s->tls : NULL;
    return t && t->done ? SSL_get_version(t->ssl) : NULL;
}

int usock_tls_session_reused(const usock_t *s)
{
    if (!s || !s->tls || !s->tls->done) {
        return usock__fail(EINVAL);
    }
    return SSL_session_reused(s->tls->ssl) ? 1 : 0;
}

#else /* !HAVE_OPENSSL: every call fails with ENOTSUP */

usock_tls_t *usock_tls_new(int side)
{
    (void)side;
    errno = ENOTSUP;
    return NULL;
}

int usock_tls_load_cert(usock_tls_t *t, const char *c, const char *k)
{
    (void)t, (void)c, (void)k;
    return usock__fail(ENOTSUP);
}

int usock_tls_load_ca(usock_tls_t *t, const char *f, const char *p)
{
    (void)t, (void)f, (void)p;
    return usock__fail(ENOTSUP);
}

int usock_tls_load_cadata(usock_tls_t *t, const char *pem, size_t len)
{
    (void)t, (void)pem, (void)len;
    return usock__fail(ENOTSUP);
}

int usock_tls_set_verify(usock_tls_t *t, int r)
{
    (void)t, (void)r;
    return usock__fail(ENOTSUP);
}

int usock_tls_set_alpn(usock_tls_t *t, const char *p)
{
    (void)t, (void)p;
    return usock__fail(ENOTSUP);
}

void usock_tls_free(usock_tls_t *t)
{
    (void)t;
}

int usock_tls_wrap(usock_t *s, usock_tls_t *t, const char *h)
{
    (void)s, (void)t, (void)h;
    return usock__fail(ENOTSUP);
}

int usock_tls_unwrap(usock_t *s)
{
    (void)s;
    return usock__fail(ENOTSUP);
}

const char *usock_tls_alpn(const usock_t *s)
{
    (void)s;
    return NULL;
}

const char *usock_tls_error(const usock_t *s)
{
    (void)s;
    return NULL;
}

const char *usock_tls_peer_subject(const usock_t *s)
{
    (void)s;
    return NULL;
}

const char *usock_tls_version(const usock_t *s)
{
    (void)s;
    return NULL;
}

int usock_tls_session_reused(const usock_t *s)
{
    (void)s;
    return usock__fail(ENOTSUP);
}

/* Never reached: no socket has s->tls without OpenSSL. */
ssize_t usock__tls_recv(struct usock *s, void *buf, size_t n, int64_t *dl)
{
    (void)s, (void)buf, (void)n, (void)dl;
    return usock__fail(ENOTSUP);
}

ssize_t usock__tls_send(struct usock *s, const void *buf, size_t n,
                        int64_t *dl)
{
    (void)s, (void)buf, (void)n, (void)dl;
    return usock__fail(ENOTSUP);
}

int usock__tls_pending(const struct usock *s)
{
    (void)s;
    return 0;
}

void usock__tls_close(struct usock *s)
{
    (void)s;
}

int usock__tls_shutdown(struct usock *s)
{
    (void)s;
    return 0;
}

#endif /* HAVE_OPENSSL */
