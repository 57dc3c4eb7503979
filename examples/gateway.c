/*
 * gateway: an IoT gateway daemon bridging UDP devices to an MQTT broker
 * (the shape of ChirpStack's gateway bridge, which turns UDP packet
 * forwarder traffic into MQTT), written the way such daemons are: a libev
 * main loop with SIGINT/SIGTERM watchers and a periodic stats timer, with
 * usocket embedded in it (usock_hub_use_ev_loop) and three tasks in plain
 * blocking style:
 *
 *   devices ──UDP──▶ udp task ──usock_chan──▶ broker task ──MQTT──▶ broker
 *      ▲                                     (queue, PUBLISH,   │
 *      └──────UDP── reader task ◀──PUBLISH PREFIX/down/+ ───────┘
 *                   (PUBACK: the message leaves the queue)
 *
 * The MQTT 3.1.1 encoding (CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE,
 * SUBACK, PINGREQ, PINGRESP, DISCONNECT) is here, small and straight-line,
 * on usock_read and usock_sendall.  With --tls the broker connection is
 * wrapped by usock_tls_wrap right after its connect, and the same MQTT code
 * runs over TLS unchanged; one usock_tls_t made at start-up serves every
 * reconnect, which offers the broker the last TLS session to resume.  Run
 * with --help for the options.
 */
#include <usocket.h>

#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEEPALIVE 10        /* seconds, sent in CONNECT */
#define BACKOFF_MIN 0.1     /* reconnect back-off: 100 ms doubling to 5 s */
#define BACKOFF_MAX 5.0
#define FLUSH_SECONDS 2.0   /* at SIGTERM: publish what is queued, at most */
#define CONNECT_TIMEOUT 5.0
#define MAX_DATAGRAM 65536
#define MAX_PACKET (1 << 20) /* larger packets from the broker: a failure */
#define CHAN_ITEMS 1024
#define WHY 320             /* room for why a connect failed */

/* MQTT 3.1.1 packet types (the high nibble of the first byte). */
enum { CONNECT = 1, CONNACK, PUBLISH, PUBACK, SUBSCRIBE = 8, SUBACK,
       PINGREQ = 12, PINGRESP, DISCONNECT };

static const char usage_text[] =
"usage: gateway --udp [ADDR:]PORT --broker HOST:PORT [--topic PREFIX]\n"
"               [--queue N] [--client-id ID] [--tls --ca FILE]\n"
"               [--stats SECONDS] [-q]\n"
"\n"
"Bridges UDP devices to an MQTT 3.1.1 broker.\n"
"\n"
"  --udp [ADDR:]PORT  where devices send datagrams (ADDR: every address)\n"
"  --broker HOST:PORT the MQTT broker (one persistent connection)\n"
"  --topic PREFIX     topic prefix (default gw)\n"
"  --queue N          messages kept while the broker is away or has not\n"
"                     acknowledged them (default 1000)\n"
"  --client-id ID     MQTT client id (default gateway-PID)\n"
"  --tls              TLS to the broker: its certificate must chain to a\n"
"                     trusted CA and name the HOST of --broker (a DNS name\n"
"                     or an IP address); trusted: the system's CAs\n"
"  --ca FILE          with --tls: trust the CAs in FILE (PEM) too\n"
"  --stats SECONDS    stats line period (default 10)\n"
"  -q                 no log lines other than the stats lines\n"
"  --help             this text\n"
"\n"
"Each datagram from device IP:PORT is published with QoS 1 on\n"
"PREFIX/up/IP:PORT, in arrival order per device.  The gateway subscribes\n"
"to PREFIX/down/+; a message on PREFIX/down/IP:PORT is sent as one\n"
"datagram to that device.\n"
"\n"
"When the broker goes away (refused, reset, or silent past the %d s\n"
"keep-alive) the gateway reconnects with a back-off from 100 ms doubling\n"
"to 5 s and renews its subscription.  Datagrams keep being read meanwhile;\n"
"they and the QoS 1 publishes not yet acknowledged wait in a queue of at\n"
"most N messages (a message leaves it only at its PUBACK) and are sent in\n"
"order after the reconnect, resends with the DUP flag.  When the queue is\n"
"full the oldest message is dropped and counted.\n"
"\n"
"Every SECONDS and at exit it prints one line to stderr:\n"
"  gateway: up=N down=N queued=N dropped=N reconnects=N\n"
"(up: messages acknowledged by the broker; down: datagrams sent to devices;\n"
"queued: the queue's depth now; dropped: messages dropped from a full\n"
"queue; reconnects: sessions re-established after the first.)  The exit\n"
"line is its last output.\n"
"\n"
"SIGTERM or SIGINT: stop reading datagrams, publish what is queued for at\n"
"most 2 s, send DISCONNECT, exit 0.\n"
"\n"
"Over TLS a failed handshake (an unknown CA, a wrong name, a peer that is\n"
"not TLS) is a failed connect: the same back-off and retries, its reason\n"
"logged once.  A reconnect offers to resume the last TLS session.  An\n"
"unreadable --ca FILE is an error at start-up (exit 2); a usocket built\n"
"without TLS makes --tls report that (exit 1).\n"
"\n"
"Exit status: 0 after a signal, 1 on a failure at start-up, 2 on bad\n"
"arguments.\n";

/* ---- options and counters ------------------------------------------------ */

static struct {
    usock_addr_t udp;
    char host[256];
    int port;
    const char *prefix;
    size_t queue_max;
    char client_id[64];
    double stats;
    int quiet;
    usock_tls_t *tls;   /* --tls: one configuration for every connection */
} opt = {.prefix = "gw", .queue_max = 1000, .stats = 10};

static struct {
    unsigned long up, down, dropped, reconnects;
} stats;

static void say(const char *fmt, ...)
{
    va_list ap;

    if (!opt.quiet) {
        va_start(ap, fmt);
        fprintf(stderr, "gateway: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

/* ---- the queue (broker side only: its tasks share one hub) --------------- */

/* One message for the broker: PREFIX/up/IP:PORT and the datagram. */
struct msg {
    struct msg *next;
    uint16_t id;          /* packet id on the current connection */
    unsigned char sent;   /* sent before: a resend carries DUP */
    size_t tlen, len;
    char data[];          /* topic, then payload */
};

static struct {
    struct msg *head, *tail;
    struct msg *unsent;   /* the first message not sent on this connection */
    size_t n;
} queue;

static void queue_put(struct msg *m)
{
    if (queue.n >= opt.queue_max) {
        struct msg *old = queue.head; /* the oldest goes */
        queue.head = old->next;
        if (queue.unsent == old) {
            queue.unsent = old->next;
        }
        if (queue.tail == old) {
            queue.tail = NULL;
        }
        queue.n--;
        stats.dropped++;
        free(old);
    }
    m->next = NULL;
    if (queue.tail) {
        queue.tail->next = m;
    } else {
        queue.head = m;
    }
    queue.tail = m;
    if (queue.unsent == NULL) {
        queue.unsent = m;
    }
    queue.n++;
}

/* PUBACK: the message with this id leaves the queue (an id we no longer
 * hold belonged to a dropped message). */
static void queue_ack(uint16_t id)
{
    struct msg **p = &queue.head, *prev = NULL;

    for (; *p && *p != queue.unsent; prev = *p, p = &(*p)->next) {
        if ((*p)->id == id) {
            struct msg *m = *p;
            *p = m->next;
            if (queue.tail == m) {
                queue.tail = prev;
            }
            queue.n--;
            stats.up++;
            free(m);
            return;
        }
    }
}

/* ---- MQTT encoding --------------------------------------------------------- */

/* A packet under construction. */
struct pkt {
    unsigned char *b;
    size_t len, cap;
};

static int put(struct pkt *p, const void *v, size_t n)
{
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        while (cap < p->len + n) {
            cap *= 2;
        }
        unsigned char *b = realloc(p->b, cap);
        if (b == NULL) {
            return -1;
        }
        p->b = b;
        p->cap = cap;
    }
    memcpy(p->b + p->len, v, n);
    p->len += n;
    return 0;
}

static int put_u16(struct pkt *p, unsigned v)
{
    unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return put(p, b, 2);
}

static int put_str(struct pkt *p, const char *s, size_t n)
{
    return put_u16(p, (unsigned)n) || put(p, s, n);
}

/* Start a packet: the first byte and room for the remaining length. */
static void begin(struct pkt *p, unsigned first)
{
    unsigned char b[5] = {(unsigned char)first};
    p->len = 0;
    put(p, b, 5);
}

/* Finish it: write the remaining length as a varint just before the body,
 * and send it all.  0, or -1 with errno. */
static int send_pkt(usock_t *s, struct pkt *p)
{
    size_t body = p->len - 5, n = body;
    unsigned char v[4];
    int k = 0;

    if (p->b == NULL) {
        errno = ENOMEM;
        return -1;
    }
    do {
        v[k] = (unsigned char)(n & 127);
        n >>= 7;
        v[k] |= n ? 128 : 0;
        k++;
    } while (n && k < 4);
    unsigned char *start = p->b + 5 - k - 1;
    start[0] = p->b[0];
    memcpy(start + 1, v, (size_t)k);
    return usock_sendall(s, start, body + 1 + (size_t)k);
}

/* Read one packet: its first byte and its body (into *buf, grown).  0, or
 * -1 (EOF, an error, a timeout: the broker is gone). */
static int read_pkt(usock_t *s, unsigned char *first, unsigned char **buf,
                    size_t *cap, size_t *len)
{
    unsigned char b;
    size_t n = 0;
    int shift = 0;

    if (usock_read(s, first, 1) != 1) {
        return -1;
    }
    do {
        if (shift > 21 || usock_read(s, &b, 1) != 1) {
            return -1;
        }
        n |= (size_t)(b & 127) << shift;
        shift += 7;
    } while (b & 128);
    if (n > MAX_PACKET) {
        errno = EMSGSIZE;
        return -1;
    }
    if (n > *cap) {
        unsigned char *g = realloc(*buf, n);
        if (g == NULL) {
            return -1;
        }
        *buf = g;
        *cap = n;
    }
    if (n > 0 && usock_read(s, *buf, n) != (ssize_t)n) {
        return -1;
    }
    *len = n;
    return 0;
}

/* ---- state shared by the tasks -------------------------------------------- */

static usock_t *udp;            /* devices' socket: the udp task reads,
                                   the reader task sends */
static usock_chan_t *inbox;     /* udp task -> broker task: struct msg *;
                                   NULL: a reader lost its connection */
static usock_cond_t *changed;   /* an ack came or a connection was lost
                                   (waited on while flushing) */
static int udp_task;
static int stopping;            /* SIGTERM/SIGINT came */
static double stop_by;          /* then: the end of the flush */
static ev_signal sigint_w, sigterm_w;
static ev_timer stats_w;

struct conn {
    usock_t *s;
    int reader;                 /* its reader task */
    int alive;                  /* the reader has not seen it fail */
    int sentinel;               /* its NULL reached the broker task */
};

/* ---- the udp task ------------------------------------------------------------ */

static void udp_main(void *arg)
{
    unsigned char *buf = malloc(MAX_DATAGRAM);
    char who[80];
    usock_addr_t from;
    ssize_t n;

    (void)arg;
    /* After SIGTERM usock_cancel makes recvfrom fail with ECANCELED. */
    while (buf && (n = usock_recvfrom(udp, buf, MAX_DATAGRAM, &from)) >= 0) {
        usock_addr_format(&from, who, sizeof who);
        size_t tlen = strlen(opt.prefix) + 4 + strlen(who);
        struct msg *m = malloc(sizeof *m + tlen + 1 + (size_t)n);
        if (m == NULL) {
            continue;
        }
        *m = (struct msg){.tlen = tlen, .len = (size_t)n};
        snprintf(m->data, tlen + 1, "%s/up/%s", opt.prefix, who);
        memcpy(m->data + tlen, buf, (size_t)n);
        if (usock_chan_send(inbox, &m, USOCK_NONE) < 0) {
            free(m);
            break;
        }
    }
    free(buf);
    usock_chan_close(inbox); /* the broker task flushes, then stops */
}

/* ---- the reader task: what the broker sends ---------------------------------- */

/* A PUBLISH on PREFIX/down/IP:PORT: one datagram to that device. */
static void down(unsigned first, const unsigned char *b, size_t len)
{
    char topic[300], ip[64];
    size_t tlen, off, plen = strlen(opt.prefix);
    usock_addr_t to;

    if (len < 2 || (tlen = (size_t)b[0] << 8 | b[1]) + 2 > len ||
        tlen >= sizeof topic) {
        return;
    }
    memcpy(topic, b + 2, tlen);
    topic[tlen] = '\0';
    off = 2 + tlen + (((first >> 1) & 3) ? 2 : 0); /* QoS > 0: an id */
    if (off > len || strncmp(topic, opt.prefix, plen) != 0 ||
        strncmp(topic + plen, "/down/", 6) != 0) {
        return;
    }
    const char *dev = topic + plen + 6;
    const char *colon = strrchr(dev, ':');
    if (colon == NULL) {
        return;
    }
    if (dev[0] == '[' && colon > dev && colon[-1] == ']') {
        snprintf(ip, sizeof ip, "%.*s", (int)(colon - dev - 2), dev + 1);
    } else {
        snprintf(ip, sizeof ip, "%.*s", (int)(colon - dev), dev);
    }
    if (usock_addr_ip(&to, ip, atoi(colon + 1)) == 0 &&
        usock_sendto(udp, b + off, len - off, &to) >= 0) {
        stats.down++;
    }
}

static void reader_main(void *arg)
{
    struct conn *c = arg;
    unsigned char *buf = NULL, first;
    size_t cap = 0, len;
    struct msg *lost = NULL;

    while (read_pkt(c->s, &first, &buf, &cap, &len) == 0) {
        switch (first >> 4) {
        case PUBACK:
            if (len >= 2) {
                queue_ack((uint16_t)(buf[0] << 8 | buf[1]));
                usock_cond_signal(changed);
            }
            break;
        case PUBLISH:
            down(first, buf, len);
            break;
        default: /* SUBACK, PINGRESP */
            break;
        }
    }
    free(buf);
    c->alive = 0;
    usock_cond_signal(changed);
    /* Tell the broker task (it waits on the channel); EPIPE while
     * stopping, when it waits on `changed` instead. */
    usock_chan_send(inbox, &lost, USOCK_NONE);
}

/* ---- the broker task ------------------------------------------------------------ */

/* Connect (over TLS with --tls), CONNECT/CONNACK, SUBSCRIBE.  The socket,
 * or NULL with why the connect failed in why[WHY]. */
static usock_t *broker_connect(char *why)
{
    usock_addrinfo_t *ai, *p;
    usock_t *s = NULL;
    struct pkt k = {0};
    unsigned char ack[4];
    char filter[300];
    ssize_t n;
    int rc;

    if ((rc = usock_getaddrinfo(opt.host, opt.port, AF_UNSPEC, SOCK_STREAM,
                                0, &ai)) != 0) {
        snprintf(why, WHY, "%s", rc == EAI_SYSTEM ? strerror(errno)
                                                  : gai_strerror(rc));
        return NULL;
    }
    for (p = ai; p != NULL && s == NULL; p = p->next) {
        s = usock_socket(p->family, SOCK_STREAM, 0);
        if (s != NULL && (usock_settimeout(s, CONNECT_TIMEOUT) < 0 ||
                          usock_connect(s, &p->addr) < 0)) {
            snprintf(why, WHY, "%s", strerror(errno));
            usock_close(s);
            s = NULL;
        }
    }
    usock_freeaddrinfo(ai);
    if (s == NULL) {
        return NULL;
    }
    /* TLS: the handshake, under the connect timeout, checking the
     * certificate against the name (or address) we were given.  From here
     * on every read and write of s is encrypted; nothing below changes. */
    if (opt.tls && usock_tls_wrap(s, opt.tls, opt.host) < 0) {
        const char *err = strerror(errno), *e = usock_tls_error(s);
        if (e == NULL || strcmp(e, err) == 0) {
            e = ""; /* nothing more to say than errno */
        }
        snprintf(why, WHY, "TLS handshake: %s%s%s", err, e[0] ? ": " : "",
                 e);
        usock_close(s);
        return NULL;
    }
    begin(&k, CONNECT << 4);
    put_str(&k, "MQTT", 4);
    put(&k, "\x04\x02", 2); /* level 4 (3.1.1), clean session */
    put_u16(&k, KEEPALIVE);
    put_str(&k, opt.client_id, strlen(opt.client_id));
    if (send_pkt(s, &k) < 0) {
        snprintf(why, WHY, "CONNECT: %s", strerror(errno));
        goto fail;
    }
    if ((n = usock_read(s, ack, 4)) != 4) {
        snprintf(why, WHY, "no CONNACK: %s",
                 n < 0 ? strerror(errno) : "the broker closed");
        goto fail;
    }
    if (ack[0] != CONNACK << 4 || ack[1] != 2 || ack[3] != 0) {
        snprintf(why, WHY, "CONNECT refused (CONNACK code %u)", ack[3]);
        goto fail;
    }
    int flen = snprintf(filter, sizeof filter, "%s/down/+", opt.prefix);
    begin(&k, SUBSCRIBE << 4 | 2);
    put_u16(&k, 1);
    put_str(&k, filter, (size_t)flen);
    put(&k, "", 1); /* QoS 0: only the broker task writes to the socket */
    if (send_pkt(s, &k) < 0) {
        snprintf(why, WHY, "SUBSCRIBE: %s", strerror(errno));
        goto fail;
    }
    free(k.b);
    /* Silent past the keep-alive (we ping at half of it): gone. */
    usock_settimeout(s, KEEPALIVE * 1.5);
    return s;
fail:
    free(k.b);
    usock_close(s);
    return NULL;
}

static uint16_t next_id;

/* Publish every message not yet sent on this connection, in order. */
static int publish_unsent(struct conn *c, struct pkt *k)
{
    struct msg *m;

    while ((m = queue.unsent) != NULL) {
        queue.unsent = m->next;
        if (++next_id == 0) {
            next_id = 1;
        }
        m->id = next_id;
        begin(k, PUBLISH << 4 | (m->sent ? 8 : 0) | 2); /* DUP, QoS 1 */
        put_str(k, m->data, m->tlen);
        put_u16(k, m->id);
        put(k, m->data + m->tlen, m->len);
        m->sent = 1;
        if (send_pkt(c->s, k) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Drain the inbox into the queue for `seconds`.  -1 once it is closed. */
static int take_in(double seconds)
{
    double end = usock_now() + seconds;
    struct msg *m;

    for (;;) {
        double left = end - usock_now();
        if (usock_chan_recv(inbox, &m, left > 0 ? left : 0) < 0) {
            return errno == EPIPE ? -1 : 0; /* ETIMEDOUT, EAGAIN: done */
        }
        if (m != NULL) {
            queue_put(m);
        }
    }
}

/* Serve one connection until it is lost (-1) or, when stopping, until the
 * queue is empty or the flush time is over (0: DISCONNECT sent). */
static int session(struct conn *c)
{
    struct pkt k = {0};
    double ping_at = usock_now() + KEEPALIVE / 2.0;
    struct msg *m;
    int rc = -1;

    for (;;) {
        if (!c->alive || publish_unsent(c, &k) < 0) {
            break;
        }
        if (stopping) {
            take_in(0); /* what was read before the signal is queued too */
            if (publish_unsent(c, &k) < 0) {
                break;
            }
            if (queue.n == 0 || usock_now() >= stop_by) {
                begin(&k, DISCONNECT << 4);
                rc = send_pkt(c->s, &k);
                break;
            }
            usock_cond_wait(changed, stop_by - usock_now());
            continue;
        }
        double left = ping_at - usock_now();
        if (left <= 0) {
            begin(&k, PINGREQ << 4);
            if (send_pkt(c->s, &k) < 0) {
                break;
            }
            ping_at = usock_now() + KEEPALIVE / 2.0;
            continue;
        }
        if (usock_chan_recv(inbox, &m, left) == 0) {
            if (m == NULL) {
                c->sentinel = 1; /* the reader lost the connection */
                break;
            }
            queue_put(m);
        } else if (errno == EPIPE) {
            stopping = 1; /* closed and drained: flush */
        }
    }
    free(k.b);
    return rc;
}

static void broker_main(void *arg)
{
    double backoff = BACKOFF_MIN;
    int sessions = 0;
    char why[WHY], said[WHY] = ""; /* said: the reason last logged */

    (void)arg;
    for (;;) {
        if (stopping) {
            /* Every blocking call of this task ends by the flush's end. */
            usock_setdeadline(stop_by);
            take_in(0);
            if (queue.n == 0 || usock_now() >= stop_by) {
                break;
            }
        }
        struct conn c = {.alive = 1};
        if ((c.s = broker_connect(why)) == NULL) {
            /* Once per reason while the broker stays away, not once per
             * try: a wrong CA would otherwise log every 5 s. */
            if (strcmp(why, said) != 0) {
                say("broker %s:%d unreachable: %s", opt.host, opt.port, why);
                snprintf(said, sizeof said, "%s", why);
            }
            if (stopping) {
                usock_sleep(backoff);
            } else if (take_in(backoff) < 0) {
                stopping = 1;
            }
            backoff = backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : backoff * 2;
            continue;
        }
        backoff = BACKOFF_MIN;
        said[0] = '\0';
        stats.reconnects += sessions++ > 0;
        if (opt.tls) {
            say("connected to %s:%d over %s%s, %zu queued", opt.host,
                opt.port, usock_tls_version(c.s),
                usock_tls_session_reused(c.s) == 1 ? " (session resumed)" : "",
                queue.n);
        } else {
            say("connected to %s:%d, %zu queued", opt.host, opt.port,
                queue.n);
        }
        queue.unsent = queue.head; /* resend what was not acknowledged */
        c.reader = usock_spawn(reader_main, &c);
        int rc = session(&c);
        /* After DISCONNECT our end of the stream (over TLS a close_notify,
         * which may wait for room; a lost connection gets none).  Then the
         * read side, which never waits: the reader sees the end. */
        if (rc == 0) {
            usock_shutdown(c.s, SHUT_WR);
        }
        usock_shutdown(c.s, SHUT_RD);
        /* Its NULL is still to come unless we stopped on it: take it in
         * (with whatever datagrams came first). */
        struct msg *m;
        while (!c.sentinel && !stopping &&
               usock_chan_recv(inbox, &m, USOCK_NONE) == 0) {
            if (m == NULL) {
                break;
            }
            queue_put(m);
        }
        /* The reader ends now that its socket is shut down: wait for it
         * whatever the deadline, as it uses c. */
        double dl = usock_setdeadline(USOCK_NONE);
        usock_join(c.reader, USOCK_NONE);
        usock_setdeadline(dl);
        usock_close(c.s);
        if (rc == 0) {
            break; /* flushed and disconnected */
        }
        say("connection to %s:%d lost", opt.host, opt.port);
    }
}

/* ---- the libev side: signals and the stats timer ---------------------------- */

static void print_stats(void)
{
    fprintf(stderr, "gateway: up=%lu down=%lu queued=%zu dropped=%lu "
            "reconnects=%lu\n", stats.up, stats.down, queue.n,
            stats.dropped, stats.reconnects);
}

static void on_stats(struct ev_loop *loop, ev_timer *w, int revents)
{
    print_stats();
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (stopping && stop_by > 0) {
        return;
    }
    stopping = 1;
    stop_by = usock_now() + FLUSH_SECONDS;
    usock_cancel(udp_task);      /* stop reading datagrams */
    usock_cond_signal(changed);
    /* Our watchers go: ev_run returns once the tasks are done. */
    ev_signal_stop(loop, &sigint_w);
    ev_signal_stop(loop, &sigterm_w);
    ev_timer_stop(loop, &stats_w);
}

/* ---- main -------------------------------------------------------------------- */

/* "[ADDR:]PORT" or "HOST:PORT" (a [v6] address in brackets). */
static int split(const char *spec, char *host, size_t n, int *port)
{
    const char *colon = strrchr(spec, ':');
    const char *h = spec;
    size_t hl = colon ? (size_t)(colon - spec) : 0;

    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= n) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = atoi(colon ? colon + 1 : spec);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"udp", required_argument, NULL, 'u'},
        {"broker", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"queue", required_argument, NULL, 'n'},
        {"client-id", required_argument, NULL, 'i'},
        {"tls", no_argument, NULL, 'T'},
        {"ca", required_argument, NULL, 'c'},
        {"stats", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    char uhost[64] = "";
    int uport = 0, have_udp = 0, have_broker = 0, tls = 0, o;
    const char *ca = NULL;

    snprintf(opt.client_id, sizeof opt.client_id, "gateway-%ld",
             (long)getpid());
    while ((o = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
        switch (o) {
        case 'u':
            have_udp = split(optarg, uhost, sizeof uhost, &uport) == 0 &&
                       usock_addr_ip(&opt.udp, uhost, uport) == 0;
            break;
        case 'b':
            have_broker = split(optarg, opt.host, sizeof opt.host,
                                &opt.port) == 0 && opt.host[0] != '\0';
            break;
        case 't':
            opt.prefix = optarg;
            break;
        case 'n':
            opt.queue_max = strtoul(optarg, NULL, 10);
            break;
        case 'i':
            snprintf(opt.client_id, sizeof opt.client_id, "%s", optarg);
            break;
        case 'T':
            tls = 1;
            break;
        case 'c':
            ca = optarg;
            break;
        case 's':
            opt.stats = atof(optarg);
            break;
        case 'q':
            opt.quiet = 1;
            break;
        case 'h':
            printf(usage_text, KEEPALIVE);
            return 0;
        default:
            fprintf(stderr, usage_text, KEEPALIVE);
            return 2;
        }
    }
    if (optind != argc || !have_udp || !have_broker || opt.queue_max < 1 ||
        opt.queue_max > 65535 || !(opt.stats > 0) || (ca && !tls) ||
        strlen(opt.prefix) > 200) {
        fprintf(stderr, usage_text, KEEPALIVE);
        return 2;
    }
    if (tls) {
        /* One client configuration for the whole run: it verifies against
         * the system's CAs, and FILE's; it keeps the last session for the
         * next connect to resume. */
        if ((opt.tls = usock_tls_new(USOCK_TLS_CLIENT)) == NULL) {
            if (errno == ENOTSUP) {
                fprintf(stderr, "gateway: --tls%s%s: TLS is not built into "
                        "this usocket\n", ca ? " --ca " : "", ca ? ca : "");
            } else {
                perror("gateway: usock_tls_new");
            }
            return 1;
        }
        if (ca && usock_tls_load_ca(opt.tls, ca, NULL) < 0) {
            fprintf(stderr, "gateway: --ca %s: %s\n", ca,
                    errno == EINVAL ? "no PEM certificate in it"
                                    : strerror(errno));
            usock_tls_free(opt.tls);
            return 2;
        }
    }

    struct ev_loop *loop = ev_default_loop(0);
    if (loop == NULL || usock_hub_use_ev_loop(loop) < 0) {
        perror("gateway: usock_hub_use_ev_loop");
        return 1;
    }
    udp = usock_socket(strchr(uhost, ':') ? AF_INET6 : AF_INET, SOCK_DGRAM,
                       0);
    if (udp == NULL || usock_bind(udp, &opt.udp) < 0) {
        perror("gateway: udp");
        return 1;
    }
    inbox = usock_chan_new(sizeof(struct msg *), CHAN_ITEMS);
    changed = usock_cond_new();
    if (inbox == NULL || changed == NULL) {
        perror("gateway");
        return 1;
    }
    udp_task = usock_spawn(udp_main, NULL);
    usock_spawn(broker_main, NULL);

    ev_signal_init(&sigint_w, on_signal, SIGINT);
    ev_signal_init(&sigterm_w, on_signal, SIGTERM);
    ev_signal_start(loop, &sigint_w);
    ev_signal_start(loop, &sigterm_w);
    ev_timer_init(&stats_w, on_stats, opt.stats, opt.stats);
    ev_timer_start(loop, &stats_w);
    say("devices on udp %s:%d, broker %s:%d%s", uhost[0] ? uhost : "*",
        uport, opt.host, opt.port, opt.tls ? " over TLS" : "");
    ev_run(loop, 0); /* until the signal, and the tasks are done */

    usock_close(udp);
    usock_chan_free(inbox);
    usock_cond_free(changed);
    usock_tls_free(opt.tls);
    while (queue.head) {
        struct msg *m = queue.head;
        queue.head = m->next;
        free(m);
    }
    print_stats();
    return 0;
}
