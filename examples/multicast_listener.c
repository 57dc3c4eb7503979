/*
 * multicast_listener: receive multicast datagrams on the loopback interface.
 *
 *     multicast_listener GROUP PORT [COUNT]
 *
 * It binds GROUP:PORT with SO_REUSEADDR (so several listeners can share the
 * port; PORT 0 picks a free one), joins GROUP on the loopback interface
 * (IP_ADD_MEMBERSHIP with interface 127.0.0.1, or IPV6_JOIN_GROUP on "lo"
 * when GROUP is an IPv6 address), prints "listening on GROUP:PORT", then
 * prints "IP:PORT: MESSAGE" for each datagram.  It exits 0 after COUNT
 * datagrams (default 1), or 1 when they have not all come within 10 s.
 *
 * Linux only sends multicast over lo when lo has the MULTICAST flag and a
 * route for the group goes through it.  As root, in a private network
 * namespace:
 *
 *     unshare -n sh -c 'ip link set lo up; ip link set lo multicast on;
 *         ip route add 224.0.0.0/4 dev lo;
 *         multicast_listener 239.1.2.3 5007 & sleep 0.5;
 *         multicast_sender 239.1.2.3 5007 hello; wait'
 *
 * The sender is multicast_sender.
 */
#include <usocket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT 10.0

/* Join the group held in `group` on the loopback interface. */
static int join(usock_t *s, const usock_addr_t *group)
{
    if (group->u.sa.sa_family == AF_INET) {
        struct ip_mreq mr;

        memset(&mr, 0, sizeof mr);
        mr.imr_multiaddr = group->u.in4.sin_addr;
        mr.imr_interface.s_addr = htonl(INADDR_LOOPBACK);
        return usock_setsockopt(s, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr,
                                sizeof mr);
    } else {
        struct ipv6_mreq mr;

        memset(&mr, 0, sizeof mr);
        mr.ipv6mr_multiaddr = group->u.in6.sin6_addr;
        mr.ipv6mr_interface = if_nametoindex("lo");
        if (mr.ipv6mr_interface == 0) {
            return -1;
        }
        return usock_setsockopt(s, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mr,
                                sizeof mr);
    }
}

/* The address GROUP:port; an IPv6 group gets the scope "lo" when it has
 * none, since link-local groups (ff02::...) need one to be bound. */
static int group_addr(usock_addr_t *a, const char *group, int port)
{
    char buf[INET6_ADDRSTRLEN + 8];

    if (strchr(group, ':') == NULL || strchr(group, '%') != NULL) {
        return usock_addr_ip(a, group, port);
    }
    if (snprintf(buf, sizeof buf, "%s%%lo", group) >= (int)sizeof buf) {
        errno = EINVAL;
        return -1;
    }
    return usock_addr_ip(a, buf, port);
}

/* A socket bound to group:port and joined to the group, announced on
 * stdout; NULL after printing why. */
static usock_t *open_group(const char *group, int port)
{
    usock_addr_t a;
    char name[128];
    usock_t *s;

    if (group_addr(&a, group, port) < 0) {
        fprintf(stderr, "multicast_listener: bad group %s\n", group);
        return NULL;
    }
    s = usock_socket(a.u.sa.sa_family, SOCK_DGRAM, 0);
    if (s == NULL) {
        perror("multicast_listener: socket");
        return NULL;
    }
    if (usock_setsockopt_int(s, SOL_SOCKET, SO_REUSEADDR, 1) < 0 ||
        usock_bind(s, &a) < 0 || join(s, &a) < 0 ||
        usock_getsockname(s, &a) < 0 ||
        usock_addr_format(&a, name, sizeof name) == NULL) {
        perror("multicast_listener: joining the group");
        usock_close(s);
        return NULL;
    }
    printf("listening on %s\n", name);
    fflush(stdout);
    return s;
}

/* Print count datagrams as "IP:PORT: MESSAGE", all within TIMEOUT. */
static int receive(usock_t *s, long count)
{
    char buf[65536], who[128];
    usock_addr_t from;

    usock_setdeadline(usock_now() + TIMEOUT);
    while (count-- > 0) {
        ssize_t n = usock_recvfrom(s, buf, sizeof buf, &from);

        if (n < 0) {
            fprintf(stderr, "multicast_listener: recvfrom: %s\n",
                    strerror(errno));
            return -1;
        }
        if (usock_addr_format(&from, who, sizeof who) == NULL) {
            snprintf(who, sizeof who, "?");
        }
        printf("%s: %.*s\n", who, (int)n, buf);
        fflush(stdout);
    }
    return 0;
}

/* Parse "GROUP PORT [COUNT]"; returns the port, or -1 after the usage. */
static int parse_args(int argc, char **argv, long *count)
{
    char *end;
    long port;

    if (argc < 3 || argc > 4) {
        goto usage;
    }
    errno = 0;
    port = strtol(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || port < 0 ||
        port > 65535) {
        goto usage;
    }
    *count = 1;
    if (argc == 4) {
        *count = strtol(argv[3], &end, 10);
        if (errno != 0 || end == argv[3] || *end != '\0' || *count < 1) {
            goto usage;
        }
    }
    return (int)port;
usage:
    fprintf(stderr,
            "usage: %s GROUP PORT [COUNT]   (e.g. 239.1.2.3 5007; PORT 0 "
            "picks a free port)\n"
            "  Loopback multicast needs lo up with MULTICAST on and a "
            "route:\n"
            "    ip link set lo multicast on; ip route add 224.0.0.0/4 dev "
            "lo\n",
            argv[0]);
    return -1;
}

int main(int argc, char **argv)
{
    long count = 1;
    int port = parse_args(argc, argv, &count);
    usock_t *s;
    int rc;

    if (port < 0) {
        return 2;
    }
    if ((s = open_group(argv[1], port)) == NULL) {
        return 1;
    }
    rc = receive(s, count);
    if (usock_close(s) < 0) {
        perror("multicast_listener: close");
        rc = -1;
    }
    return rc < 0 ? 1 : 0;
}
