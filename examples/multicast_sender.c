/*
 * multicast_sender: send multicast datagrams on the loopback interface.
 *
 *     multicast_sender GROUP PORT MESSAGE [COUNT]
 *
 * It sends MESSAGE to GROUP:PORT COUNT times (default 1), 100 ms apart,
 * out of the loopback interface (IP_MULTICAST_IF 127.0.0.1, or
 * IPV6_MULTICAST_IF "lo" when GROUP is an IPv6 address) with
 * IP_MULTICAST_LOOP on, so listeners on this host receive it.  An IPv4
 * sender binds 127.0.0.1 first, so it never leaves the host.
 *
 * Linux only sends multicast over lo when lo has the MULTICAST flag and a
 * route for the group goes through it:
 *
 *     ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo
 *
 * (as root, best in a private namespace: unshare -n).  The receiver is
 * multicast_listener.  Exit status: 0 when every datagram went out, 1 on an
 * error, 2 on bad arguments.
 */
#include <usocket.h>

#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Send from the loopback interface, and loop back to local listeners. */
static int via_loopback(usock_t *s, int family)
{
    usock_addr_t lo;
    struct in_addr ifaddr;
    int index;

    if (family == AF_INET) {
        ifaddr.s_addr = htonl(INADDR_LOOPBACK);
        if (usock_addr_ip(&lo, "127.0.0.1", 0) < 0 || usock_bind(s, &lo) < 0 ||
            usock_setsockopt(s, IPPROTO_IP, IP_MULTICAST_IF, &ifaddr,
                             sizeof ifaddr) < 0) {
            return -1;
        }
        return usock_setsockopt_int(s, IPPROTO_IP, IP_MULTICAST_LOOP, 1);
    }
    index = (int)if_nametoindex("lo");
    if (index == 0 ||
        usock_setsockopt_int(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, index) < 0) {
        return -1;
    }
    return usock_setsockopt_int(s, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 1);
}

/* Send msg to `to` count times, 100 ms apart. */
static int send_all(usock_t *s, const usock_addr_t *to, const char *msg,
                    long count)
{
    long i;

    for (i = 0; i < count; i++) {
        if (i > 0 && usock_sleep(0.1) < 0) {
            perror("multicast_sender: sleep");
            return -1;
        }
        if (usock_sendto(s, msg, strlen(msg), to) < 0) {
            perror("multicast_sender: sendto");
            return -1;
        }
    }
    return 0;
}

/* Parse "GROUP PORT MESSAGE [COUNT]"; returns the port, or -1 after the
 * usage. */
static int parse_args(int argc, char **argv, long *count)
{
    char *end;
    long port;

    if (argc < 4 || argc > 5) {
        goto usage;
    }
    errno = 0;
    port = strtol(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || port < 1 ||
        port > 65535) {
        goto usage;
    }
    *count = 1;
    if (argc == 5) {
        *count = strtol(argv[4], &end, 10);
        if (errno != 0 || end == argv[4] || *end != '\0' || *count < 1) {
            goto usage;
        }
    }
    return (int)port;
usage:
    fprintf(stderr,
            "usage: %s GROUP PORT MESSAGE [COUNT]   (e.g. 239.1.2.3 5007 "
            "hello)\n"
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
    usock_addr_t to;
    usock_t *s;
    int rc;

    if (port < 0) {
        return 2;
    }
    if (usock_addr_ip(&to, argv[1], port) < 0) {
        fprintf(stderr, "multicast_sender: bad group %s\n", argv[1]);
        return 2;
    }
    s = usock_socket(to.u.sa.sa_family, SOCK_DGRAM, 0);
    if (s == NULL) {
        perror("multicast_sender: socket");
        return 1;
    }
    if (via_loopback(s, to.u.sa.sa_family) < 0) {
        perror("multicast_sender: the loopback interface");
        usock_close(s);
        return 1;
    }
    rc = send_all(s, &to, argv[3], count);
    if (usock_close(s) < 0) {
        perror("multicast_sender: close");
        rc = -1;
    }
    return rc < 0 ? 1 : 0;
}
