/*
 * baseline_udp: the hand-written UDP echo server of `make bench` (no
 * usocket).
 *
 *   baseline_udp PORT [NSOCKS]     (PORT 0: free ports)
 *
 * One socket: a blocking recvfrom/sendto loop, two system calls per
 * datagram.  NSOCKS > 1 (a single thread cannot block on many fds):
 * non-blocking sockets in one level-triggered epoll set, one recvfrom and
 * one sendto per readiness event.  Prints "listening on 127.0.0.1:N[,N…]".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SOCKS 1024

static char buf[65536];

static void echo_one(int fd)
{
    struct sockaddr_storage from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from,
                         &len);

    if (n >= 0) {
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
    }
}

static int open_sock(int port, int flags)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | flags, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("baseline_udp");
        exit(1);
    }
    printf("%d", ntohs(a.sin_port));
    return fd;
}

int main(int argc, char **argv)
{
    static struct epoll_event evs[MAX_SOCKS];
    int port, n = 1, ep;

    if (argc < 2) {
        fprintf(stderr, "usage: baseline_udp PORT [NSOCKS]\n");
        return 2;
    }
    port = atoi(argv[1]);
    if (argc > 2 && (n = atoi(argv[2])) < 1) {
        n = 1;
    }
    n = n > MAX_SOCKS ? MAX_SOCKS : n;
    printf("listening on 127.0.0.1:");
    if (n == 1) {
        int fd = open_sock(port, 0);
        printf("\n");
        fflush(stdout);
        for (;;) {
            echo_one(fd);
        }
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < n; i++) {
        int fd = open_sock(port ? port + i : 0, SOCK_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        printf(i + 1 < n ? "," : "\n");
    }
    fflush(stdout);
    for (;;) {
        int k = epoll_wait(ep, evs, MAX_SOCKS, -1);
        for (int i = 0; i < k; i++) {
            echo_one(evs[i].data.fd);
        }
    }
}
