/*
 * echo_load: the TCP load generator of `make bench`.  It does not use
 * usocket: one thread, one epoll set, CONNS connections to 127.0.0.1:PORT,
 * each keeping exactly one SIZE-byte message in flight (ping-pong).
 *
 *   echo_load -p PORT -c CONNS -s SIZE -d SECONDS [-w WARMUP] [-n NSRC]
 *             [-P SERVER_PID [-K SERVER_CPU]] [-C CTL_FIFO -A ACK_FIFO]
 *
 * Phases: connect (bounded), warm-up, measurement.  Only round trips that
 * complete inside the measurement window are counted; their latencies go
 * into a log-bucketed histogram.  With -P, the server's CPU time (the
 * sum of its threads' /proc/PID/task/TID/schedstat run time, in ns; else
 * utime + stime from /proc/PID/stat) and memory (/proc/PID/status) are
 * read at the exact edges of the window; with -K, so is the busy time of
 * the CPU the server is pinned to (/proc/stat: the server and the
 * kernel's softirq work done there, in ksoftirqd too, which the server's
 * own time misses); with -C/-A, "enable" and
 * "disable" are written to a `perf stat --control` fifo at those edges,
 * so perf counts the server's system calls inside the window only.  Round
 * trips are counted as the server saw them: the echoes still queued here
 * at each edge are corrected for.  One machine-readable line:
 *
 *   rtt_per_s=… p50_us=… p99_us=… errors=… conns=… [srv_… fields]
 *
 * Connection failures, resets and short reads count as errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadstat.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_INFLIGHT_CONNECTS 1024

enum { CONNECTING, PINGING, DEAD };

struct conn {
    int fd;
    int state;
    size_t sent, got;  /* bytes of the current message */
    int64_t t0;        /* when the current message was sent */
    int want_out;      /* EPOLLOUT registered */
};

struct opts {
    int port, conns, nsrc;
    size_t size;
    double secs, warm;
    int pid, cpu;      /* -P, -K (-1: none) */
    const char *ctl, *ack;
};

static struct opts o = {.warm = 1.0, .size = 64, .conns = 1, .secs = 5,
                       .cpu = -1};
static struct conn *cs;
static int ep;
static char *msg, *rbuf;
static struct hist lat;
static uint64_t errors;
static int measuring;
static int connected, pending, next_conn;

/* Bytes already echoed by the server but not yet consumed here, over all
 * connections, in messages: the server did that work before this moment. */
static double backlog(void)
{
    double bytes = 0;

    for (int i = 0; i < o.conns; i++) {
        int q = 0;
        if (cs[i].state == PINGING && ioctl(cs[i].fd, FIONREAD, &q) == 0) {
            bytes += q + (double)cs[i].got;
        }
    }
    return bytes / (double)o.size;
}

static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void set_events(struct conn *c, int out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
                             .data.ptr = c};

    if (c->want_out != out) {
        c->want_out = out;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void kill_conn(struct conn *c)
{
    struct linger lg = {1, 0};

    if (c->state == CONNECTING) {
        pending--;
    }
    if (c->state != DEAD) {
        errors++;
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
        c->state = DEAD;
    }
}

/* Start a new connection: source 127.0.0.(2 + i % nsrc). */
static void start_connect(int i)
{
    struct conn *c = &cs[i];
    struct sockaddr_in src = {.sin_family = AF_INET};
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)o.port)};
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    int one = 1;

    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + (uint32_t)(i % o.nsrc));
    c->state = CONNECTING;
    pending++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = DEAD;
        pending--;
        errors++;
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (o.nsrc > 1 && bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
        kill_conn(c);
        return;
    }
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 &&
        errno != EINPROGRESS) {
        kill_conn(c);
        return;
    }
    c->want_out = 1;
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Send what is left of the current message; 0, or -1 when the conn died. */
static int push(struct conn *c)
{
    while (c->sent < o.size) {
        ssize_t r = send(c->fd, msg + c->sent, o.size - c->sent,
                         MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EAGAIN) {
                set_events(c, 1);
                return 0;
            }
            kill_conn(c);
            return -1;
        }
        c->sent += (size_t)r;
    }
    set_events(c, 0);
    return 0;
}

static void new_message(struct conn *c, int64_t t)
{
    c->sent = c->got = 0;
    c->t0 = t;
    push(c);
}

static void on_connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;

    pending--;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        c->state = DEAD;
        errors++;
        close(c->fd);
        return;
    }
    c->state = PINGING;
    connected++;
    new_message(c, now_ns());
}

/* Read the echo; a complete message is one round trip. */
static void pull(struct conn *c)
{
    ssize_t r = recv(c->fd, rbuf, o.size - c->got, 0);
    int64_t t;

    if (r <= 0) {
        if (r < 0 && errno == EAGAIN) {
            return;
        }
        kill_conn(c);
        return;
    }
    c->got += (size_t)r;
    if (c->got < o.size) {
        return;
    }
    t = now_ns();
    if (measuring) {
        hist_add(&lat, (uint64_t)(t - c->t0));
    }
    new_message(c, t);
}

static void on_event(struct epoll_event *e)
{
    struct conn *c = e->data.ptr;

    if (c->state == CONNECTING) {
        on_connected(c);
        return;
    }
    if (c->state != PINGING) {
        return;
    }
    if ((e->events & EPOLLOUT) && c->sent < o.size && push(c) < 0) {
        return;
    }
    if (e->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        pull(c);
    }
}

/* Run the loop until `until` (ns), starting connects as slots free up. */
static void run_until(int64_t until, int connect_phase)
{
    struct epoll_event evs[512];

    for (;;) {
        int64_t left = until - now_ns();
        int n;

        while (next_conn < o.conns && pending < MAX_INFLIGHT_CONNECTS) {
            start_connect(next_conn++);
        }
        if (connect_phase && next_conn >= o.conns && pending == 0) {
            return;
        }
        if (left <= 0) {
            return;
        }
        n = epoll_wait(ep, evs, 512, (int)(left / 1000000) + 1);
        for (int i = 0; i < n; i++) {
            on_event(&evs[i]);
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_load -p PORT -c CONNS -s SIZE -d SECONDS "
                    "[-w WARMUP] [-n NSRC] [-P PID [-K CPU]] [-C CTL -A ACK]\n");
    exit(2);
}

static void parse(int argc, char **argv)
{
    int ch;

    while ((ch = getopt(argc, argv, "p:c:s:d:w:n:P:K:C:A:")) != -1) {
        switch (ch) {
        case 'p': o.port = atoi(optarg); break;
        case 'c': o.conns = atoi(optarg); break;
        case 's': o.size = (size_t)atol(optarg); break;
        case 'd': o.secs = atof(optarg); break;
        case 'w': o.warm = atof(optarg); break;
        case 'n': o.nsrc = atoi(optarg); break;
        case 'P': o.pid = atoi(optarg); break;
        case 'K': o.cpu = atoi(optarg); break;
        case 'C': o.ctl = optarg; break;
        case 'A': o.ack = optarg; break;
        default: usage();
        }
    }
    if (o.port <= 0 || o.conns <= 0 || o.size == 0 || o.secs <= 0) {
        usage();
    }
    if (o.nsrc <= 0) {
        o.nsrc = 1 + o.conns / 4000;
    }
}

/* The measurement window: what the server did inside it (when -P). */
struct window {
    double cpu0, cpu1, b0, b1, busy0, busy1;
    int64_t t0, t1;
    long rss0, rss, hwm;
};

static void measure(struct window *w)
{
    measuring = 1;
    perf_ctl(o.ctl, o.ack, "enable\n");
    w->cpu0 = o.pid ? cpu_ns(o.pid) : 0;
    w->busy0 = o.cpu >= 0 ? cpu_busy_ns(o.cpu) : -1;
    w->b0 = o.pid ? backlog() : 0;
    w->t0 = now_ns();
    run_until(w->t0 + (int64_t)(o.secs * 1e9), 0);
    w->t1 = now_ns();
    w->cpu1 = o.pid ? cpu_ns(o.pid) : 0;
    w->busy1 = o.cpu >= 0 ? cpu_busy_ns(o.cpu) : -1;
    w->b1 = o.pid ? backlog() : 0;
    perf_ctl(o.ctl, o.ack, "disable\n");
    measuring = 0;
    if (o.pid) {
        w->rss = proc_kib(o.pid, "VmRSS");
        w->hwm = proc_kib(o.pid, "VmHWM");
    }
}

static void report(const struct window *w)
{
    printf("rtt_per_s=%.0f p50_us=%.1f p99_us=%.1f errors=%llu conns=%d",
           (double)lat.count * 1e9 / (double)(w->t1 - w->t0),
           hist_percentile(&lat, 0.5) / 1e3, hist_percentile(&lat, 0.99) / 1e3,
           (unsigned long long)errors, connected);
    if (o.pid) {
        /* Round trips the server served inside the window: those that
         * completed here, corrected for the echoes waiting in our receive
         * queues at each edge (up to CONNS of them). */
        double us = (w->cpu1 - w->cpu0) / 1e3;
        double srv = (double)lat.count + w->b1 - w->b0;
        printf(" rts=%.0f srv_cpu_us_per_rt=%.3f srv_rss0_kib=%ld "
               "srv_rss_kib=%ld srv_hwm_kib=%ld", srv,
               srv > 0 ? us / srv : 0.0, w->rss0, w->rss, w->hwm);
        if (w->busy0 >= 0 && w->busy1 >= 0 && srv > 0) {
            printf(" cpu_busy_us_per_rt=%.3f",
                   (w->busy1 - w->busy0) / 1e3 / srv);
        }
    }
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct window w = {.rss0 = -1, .rss = -1, .hwm = -1};

    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    cs = calloc((size_t)o.conns, sizeof *cs);
    msg = malloc(o.size);
    rbuf = malloc(o.size);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!cs || !msg || !rbuf || ep < 0) {
        perror("echo_load");
        return 1;
    }
    memset(msg, 'x', o.size);
    if (o.pid) {
        w.rss0 = proc_kib(o.pid, "VmRSS");
    }
    /* Connect phase: bounded at 10 s + 1 ms per connection. */
    run_until(now_ns() + 10000000000LL + (int64_t)o.conns * 1000000, 1);
    run_until(now_ns() + (int64_t)(o.warm * 1e9), 0);
    measure(&w);
    report(&w);
    for (int i = 0; i < o.conns; i++) {
        if (cs[i].state != DEAD) {
            struct linger lg = {1, 0};
            setsockopt(cs[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(cs[i].fd);
        }
    }
    return 0;
}
