/*
 * ping: ICMP echo with a raw usocket socket.
 *
 *     ping [-c COUNT] [HOST]
 *
 * It sends COUNT (default 4) ICMP echo requests to HOST (default 127.0.0.1;
 * a numeric IPv4 address or a name), 1 s apart, and prints
 *
 *     PING 127.0.0.1
 *     64 bytes from 127.0.0.1: icmp_seq=1 time=0.052 ms
 *
 * for each reply that comes within 2 s ("no reply for icmp_seq=N" when none
 * does).  It needs a SOCK_RAW IPPROTO_ICMP socket (root or CAP_NET_RAW);
 * without the privilege it falls back to the unprivileged "ping socket"
 * (SOCK_DGRAM IPPROTO_ICMP, allowed by net.ipv4.ping_group_range).
 *
 * Exit status: 0 iff every reply came; 1 otherwise; 2 on bad arguments or
 * when neither socket can be opened.
 */
#include <usocket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAYLOAD  56   /* 64 bytes of ICMP, as ping(8) sends */
#define INTERVAL 1.0
#define TIMEOUT  2.0

/* One echo request or reply: the ICMP header and its payload. */
struct echo {
    struct icmphdr h;
    unsigned char data[PAYLOAD];
};

/* The state of one run. */
struct pinger {
    usock_t *s;
    int raw;              /* SOCK_RAW: replies carry the IP header */
    uint16_t id;          /* our identifier (raw sockets only) */
    usock_addr_t to;
    char ip[INET_ADDRSTRLEN];
};

/* The Internet checksum (RFC 1071) of n bytes. */
static uint16_t checksum(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint32_t sum = 0;
    size_t i;

    for (i = 0; i + 1 < n; i += 2) {
        sum += (uint32_t)(b[i] << 8 | b[i + 1]);
    }
    if (n & 1) {
        sum += (uint32_t)(b[n - 1] << 8);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return htons((uint16_t)~sum);
}

/* Resolve host to an IPv4 address in p->to and p->ip. */
static int resolve(struct pinger *p, const char *host)
{
    usock_addrinfo_t *res;
    int rc;

    if (usock_addr_ip(&p->to, host, 0) == 0 &&
        p->to.u.sa.sa_family == AF_INET) {
        return inet_ntop(AF_INET, &p->to.u.in4.sin_addr, p->ip,
                         sizeof p->ip) ? 0 : -1;
    }
    rc = usock_getaddrinfo(host, 0, AF_INET, SOCK_DGRAM, 0, &res);
    if (rc != 0) {
        fprintf(stderr, "ping: %s: %s\n", host,
                rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    p->to = res->addr;
    usock_freeaddrinfo(res);
    return inet_ntop(AF_INET, &p->to.u.in4.sin_addr, p->ip, sizeof p->ip)
               ? 0
               : -1;
}

/* A raw ICMP socket, or the unprivileged ping socket without privilege. */
static int open_socket(struct pinger *p)
{
    p->raw = 1;
    p->s = usock_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (p->s == NULL && (errno == EPERM || errno == EACCES)) {
        p->raw = 0;
        p->s = usock_socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    }
    if (p->s == NULL) {
        fprintf(stderr, "ping: cannot open an ICMP socket: %s\n"
                        "  (raw sockets need root or CAP_NET_RAW; ping "
                        "sockets need net.ipv4.ping_group_range)\n",
                strerror(errno));
        return -1;
    }
    /* The kernel sets the id of a ping socket's requests itself. */
    p->id = (uint16_t)(getpid() & 0xffff);
    return 0;
}

/* Send echo request number seq. */
static int send_request(struct pinger *p, int seq)
{
    struct echo e;

    memset(&e, 0, sizeof e);
    e.h.type = ICMP_ECHO;
    e.h.un.echo.id = htons(p->id);
    e.h.un.echo.sequence = htons((uint16_t)seq);
    memset(e.data, 'U', sizeof e.data);
    e.h.checksum = checksum(&e, sizeof e);
    if (usock_sendto(p->s, &e, sizeof e, &p->to) < 0) {
        fprintf(stderr, "ping: sendto %s: %s\n", p->ip, strerror(errno));
        return -1;
    }
    return 0;
}

/* The ICMP length of buf (n bytes) if it is the reply to seq, else -1.
 * A raw socket sees the IP header, our own requests on loopback and other
 * programs' pings: skip those. */
static ssize_t is_reply(const struct pinger *p, const unsigned char *buf,
                        ssize_t n, const usock_addr_t *from, int seq)
{
    const struct icmphdr *h;
    size_t off = 0;

    if (p->raw) {
        off = (size_t)(buf[0] & 0x0f) * 4;
        if (n < 1 || (size_t)n < off + sizeof *h ||
            from->u.in4.sin_addr.s_addr != p->to.u.in4.sin_addr.s_addr) {
            return -1;
        }
    } else if ((size_t)n < sizeof *h) {
        return -1;
    }
    h = (const struct icmphdr *)(const void *)(buf + off);
    if (h->type != ICMP_ECHOREPLY || ntohs(h->un.echo.sequence) != seq ||
        (p->raw && ntohs(h->un.echo.id) != p->id)) {
        return -1;
    }
    return n - (ssize_t)off;
}

/* Wait up to TIMEOUT for the reply to seq, sent at `sent`; print it.
 * Returns 0 when it came, -1 otherwise. */
static int wait_reply(struct pinger *p, int seq, double sent)
{
    unsigned char buf[1500] __attribute__((aligned(8)));
    usock_addr_t from;
    double old = usock_setdeadline(sent + TIMEOUT);
    ssize_t n, len = -1;

    while (len < 0) {
        n = usock_recvfrom(p->s, buf, sizeof buf, &from);
        if (n < 0) {
            if (errno == ETIMEDOUT) {
                printf("no reply for icmp_seq=%d\n", seq);
            } else {
                fprintf(stderr, "ping: recvfrom: %s\n", strerror(errno));
            }
            break;
        }
        len = is_reply(p, buf, n, &from, seq);
    }
    usock_setdeadline(old);
    if (len < 0) {
        return -1;
    }
    printf("%zd bytes from %s: icmp_seq=%d time=%.3f ms\n", len, p->ip, seq,
           (usock_now() - sent) * 1000.0);
    fflush(stdout);
    return 0;
}

/* Ping count times, INTERVAL apart; returns how many replies were lost,
 * or -1 on an error. */
static long run(struct pinger *p, long count)
{
    long seq, lost = 0;
    double next = usock_now();

    for (seq = 1; seq <= count; seq++) {
        double now = usock_now();

        if (next > now && usock_sleep(next - now) < 0) {
            perror("ping: sleep");
            return -1;
        }
        next = usock_now() + INTERVAL;
        if (send_request(p, (int)(seq & 0xffff)) < 0) {
            return -1;
        }
        if (wait_reply(p, (int)(seq & 0xffff), next - INTERVAL) < 0) {
            lost++;
        }
    }
    return lost;
}

/* Parse "[-c COUNT] [HOST]"; returns the host, or NULL after the usage. */
static const char *parse_args(int argc, char **argv, long *count)
{
    char *end;
    int i = 1;

    *count = 4;
    if (i + 1 < argc && strcmp(argv[i], "-c") == 0) {
        errno = 0;
        *count = strtol(argv[i + 1], &end, 10);
        if (errno != 0 || end == argv[i + 1] || *end != '\0' || *count < 1) {
            goto usage;
        }
        i += 2;
    }
    if (argc - i > 1 || (argc - i == 1 && argv[i][0] == '-')) {
        goto usage;
    }
    return argc - i == 1 ? argv[i] : "127.0.0.1";
usage:
    fprintf(stderr,
            "usage: %s [-c COUNT] [HOST]   (default: 4 pings to 127.0.0.1; "
            "raw sockets need root)\n",
            argv[0]);
    return NULL;
}

int main(int argc, char **argv)
{
    long count, lost;
    const char *host = parse_args(argc, argv, &count);
    struct pinger p;

    if (host == NULL) {
        return 2;
    }
    memset(&p, 0, sizeof p);
    if (resolve(&p, host) < 0) {
        return 2;
    }
    if (open_socket(&p) < 0) {
        return 2;
    }
    printf("PING %s\n", p.ip);
    fflush(stdout);
    lost = run(&p, count);
    if (usock_close(p.s) < 0) {
        perror("ping: close");
        lost = -1;
    }
    return lost == 0 ? 0 : 1;
}
