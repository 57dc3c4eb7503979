/*
 * baseline_epoll: the hand-written single-thread epoll echo server that
 * `make bench` compares usocket against.  No usocket here.
 *
 *   baseline_epoll PORT [BUFSIZE]      (PORT 0: a free port; BUFSIZE 1024)
 *
 * Level-triggered, EPOLLIN only while idle: per readiness event one recv
 * into a shared buffer and one send back; nothing else on the hot path
 * (epoll_wait is amortised over the events it returns).  A short send
 * keeps the rest in a per-connection buffer and waits for EPOLLOUT
 * instead of reading.  Prints "listening on 127.0.0.1:N".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    char *pend;      /* bytes not yet sent back, or NULL */
    size_t off, len;
};

static int ep;
static char *buf;
static size_t bufsize = 1024;

static void drop(struct conn *c)
{
    close(c->fd);
    free(c->pend);
    free(c);
}

static void watch(struct conn *c, int op, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    epoll_ctl(ep, op, c->fd, &ev);
}

/* Send p[0..n); keep what does not fit.  0, or -1 when c is gone. */
static int reply(struct conn *c, const char *p, size_t n)
{
    ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);

    if (r < 0) {
        if (errno != EAGAIN) {
            drop(c);
            return -1;
        }
        r = 0;
    }
    if ((size_t)r == n) {
        return 0;
    }
    c->pend = malloc(n - (size_t)r);
    if (c->pend == NULL) {
        drop(c);
        return -1;
    }
    memcpy(c->pend, p + r, n - (size_t)r);
    c->off = 0;
    c->len = n - (size_t)r;
    watch(c, EPOLL_CTL_MOD, EPOLLOUT);
    return 0;
}

static void flush_pending(struct conn *c)
{
    ssize_t r = send(c->fd, c->pend + c->off, c->len - c->off, MSG_NOSIGNAL);

    if (r < 0) {
        if (errno != EAGAIN) {
            drop(c);
        }
        return;
    }
    c->off += (size_t)r;
    if (c->off == c->len) {
        free(c->pend);
        c->pend = NULL;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
    }
}

static void on_conn(struct conn *c, unsigned events)
{
    ssize_t n;

    if (c->pend != NULL) {
        flush_pending(c);
        return;
    }
    (void)events;
    n = recv(c->fd, buf, bufsize, 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        drop(c);
        return;
    }
    reply(c, buf, (size_t)n);
}

static void on_listener(int lfd)
{
    int one = 1;

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct conn *c;

        if (fd < 0) {
            return;
        }
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        watch(c, EPOLL_CTL_ADD, EPOLLIN);
    }
}

static int open_listener(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&a, sizeof a) ||
        listen(fd, SOMAXCONN) || getsockname(fd, (struct sockaddr *)&a, &len)) {
        perror("baseline_epoll");
        exit(1);
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    static struct epoll_event evs[512];
    struct rlimit rl;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    int lfd;

    if (argc < 2) {
        fprintf(stderr, "usage: baseline_epoll PORT [BUFSIZE]\n");
        return 2;
    }
    if (argc > 2) {
        bufsize = (size_t)atol(argv[2]);
    }
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    buf = malloc(bufsize);
    ep = epoll_create1(EPOLL_CLOEXEC);
    lfd = open_listener(atoi(argv[1]));
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);

        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                on_listener(lfd);
            } else {
                on_conn(evs[i].data.ptr, evs[i].events);
            }
        }
    }
}
