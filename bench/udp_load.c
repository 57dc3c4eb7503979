/*
 * udp_load: the UDP ping-pong load generator of `make bench` (no usocket).
 * One thread, one epoll set, one connected UDP socket per server port,
 * each keeping exactly one SIZE-byte datagram in flight.
 *
 *   udp_load -p PORT[,PORT…] -s SIZE -d SECONDS [-w WARMUP]
 *            [-P SERVER_PID] [-C CTL_FIFO -A ACK_FIFO]
 *
 * A datagram not answered within 100 ms is sent again and counted as an
 * error (loss).  -P, -C and -A work as in echo_load: the server's CPU time,
 * memory and (through perf's control fifo) system calls are taken over the
 * measurement window only.  Prints one line:
 *
 *   rtt_per_s=… p50_us=… p99_us=… errors=… socks=… [srv_… fields]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadstat.h"

#define MAX_SOCKS 1024
#define RESEND_NS 100000000LL

struct sock {
    int fd;
    int64_t t0;
};

static struct sock ss[MAX_SOCKS];
static int nsocks, ep, pid, measuring;
static size_t size = 64;
static double secs = 5, warm = 1;
static const char *ctl, *ackf;
static char *msg, *rbuf;
static struct hist lat;
static uint64_t errors;

static void ping(struct sock *s, int64_t t)
{
    s->t0 = t;
    if (send(s->fd, msg, size, 0) < 0) {
        errors++;
    }
}

static int open_sock(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct epoll_event ev = {.events = EPOLLIN};

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("udp_load");
        exit(1);
    }
    ev.data.ptr = &ss[nsocks];
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    ss[nsocks].fd = fd;
    return nsocks++;
}

static void on_reply(struct sock *s)
{
    for (;;) {
        ssize_t r = recv(s->fd, rbuf, size, 0);
        int64_t t;

        if (r < 0) {
            if (errno != EAGAIN) {
                errors++;
            }
            return;
        }
        t = now_ns();
        if (measuring) {
            hist_add(&lat, (uint64_t)(t - s->t0));
        }
        ping(s, t);
    }
}

/* Resend what was lost (no answer within RESEND_NS). */
static void sweep(int64_t t)
{
    for (int i = 0; i < nsocks; i++) {
        if (t - ss[i].t0 > RESEND_NS) {
            errors++;
            ping(&ss[i], t);
        }
    }
}

static void run_until(int64_t until)
{
    struct epoll_event evs[MAX_SOCKS];
    int64_t last = now_ns();

    for (;;) {
        int64_t t = now_ns(), left = until - t;
        int n;

        if (t - last > RESEND_NS / 2) {
            sweep(t);
            last = t;
        }
        if (left <= 0) {
            return;
        }
        n = epoll_wait(ep, evs, MAX_SOCKS, left > 50000000 ? 50 :
                       (int)(left / 1000000) + 1);
        for (int i = 0; i < n; i++) {
            on_reply(evs[i].data.ptr);
        }
    }
}

static void parse(int argc, char **argv)
{
    int ch;
    char *ports = NULL;

    while ((ch = getopt(argc, argv, "p:s:d:w:P:C:A:")) != -1) {
        switch (ch) {
        case 'p': ports = optarg; break;
        case 's': size = (size_t)atol(optarg); break;
        case 'd': secs = atof(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 'P': pid = atoi(optarg); break;
        case 'C': ctl = optarg; break;
        case 'A': ackf = optarg; break;
        default: ports = NULL; optind = argc; break;
        }
    }
    if (ports == NULL || size == 0 || size > 65507 || secs <= 0) {
        fprintf(stderr, "usage: udp_load -p PORT[,PORT…] -s SIZE -d SECONDS "
                        "[-w WARMUP] [-P PID] [-C CTL -A ACK]\n");
        exit(2);
    }
    for (char *p = strtok(ports, ","); p && nsocks < MAX_SOCKS;
         p = strtok(NULL, ",")) {
        open_sock(atoi(p));
    }
}

int main(int argc, char **argv)
{
    double cpu0 = 0, cpu1 = 0;
    int64_t t0, t1;

    ep = epoll_create1(EPOLL_CLOEXEC);
    parse(argc, argv);
    msg = calloc(1, size);
    rbuf = malloc(size);
    if (!msg || !rbuf) {
        return 1;
    }
    t0 = now_ns();
    for (int i = 0; i < nsocks; i++) {
        ping(&ss[i], t0);
    }
    run_until(t0 + (int64_t)(warm * 1e9));
    errors = 0; /* losses while the server starts up do not count */
    measuring = 1;
    perf_ctl(ctl, ackf, "enable\n");
    cpu0 = pid ? cpu_ns(pid) : 0;
    t0 = now_ns();
    run_until(t0 + (int64_t)(secs * 1e9));
    t1 = now_ns();
    cpu1 = pid ? cpu_ns(pid) : 0;
    perf_ctl(ctl, ackf, "disable\n");
    printf("rtt_per_s=%.0f p50_us=%.1f p99_us=%.1f errors=%llu socks=%d",
           (double)lat.count * 1e9 / (double)(t1 - t0), hist_percentile(&lat, 0.5) / 1e3,
           hist_percentile(&lat, 0.99) / 1e3, (unsigned long long)errors, nsocks);
    if (pid) {
        double us = (cpu1 - cpu0) / 1e3;
        printf(" rts=%llu srv_cpu_us_per_rt=%.3f srv_rss_kib=%ld "
               "srv_hwm_kib=%ld",
               (unsigned long long)lat.count, lat.count ? us / (double)lat.count : 0.0,
               proc_kib(pid, "VmRSS"), proc_kib(pid, "VmHWM"));
    }
    printf("\n");
    return 0;
}
